package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/raftd/raftd/core/pki"
	"github.com/spf13/cobra"
)

// NewCmdCerts returns `raftd certs init`.
func NewCmdCerts(f *Factory) *cobra.Command {
	cmd := &cobra.Command{Use: "certs", Short: "Make TLS certificates for a test cluster", Args: noArgs}
	var nodes int
	var hosts string
	var validFor time.Duration
	initCmd := &cobra.Command{
		Use:   "init DIR",
		Short: "Make a CA, node certificates and a client certificate (ECDSA P-256) in DIR",
		Long: `Init writes ca.crt, ca.key, node-<id>.crt and node-<id>.key for ids 1..--nodes,
client.crt and client.key into DIR (created 0700, files 0600, never
overwritten). A node certificate names its member (URI SAN raftd://node/<id>,
CN raftd-node-<id>) and is valid for --hosts, as server and client. This is
for test clusters: production clusters should use certificates from the
team's own CA (docs/security.md).`,
		Example: `  raftd certs init ./certs --nodes 3 --hosts 127.0.0.1,localhost,10.0.0.5`,
		Args:    exactArgs(1, "DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if nodes < 1 || nodes > 1000 {
				return usageErrorf("certs init: --nodes must be between 1 and 1000")
			}
			cf, err := pki.InitCluster(args[0], nodes, strings.Split(hosts, ","), validFor)
			if err != nil {
				return withCode(ExitFailure, err)
			}
			fmt.Fprintf(f.Out, "wrote a CA, %d node certificates and a client certificate to %s (valid for %.0f days)\n\nnode 1:\n  raftd run ... %s\nclients:\n%s\n",
				nodes, cf.Dir, validFor.Hours()/24, nodeTLSFlags(cf.Nodes[0]), clientTLSEnv(cf.Client))
			fmt.Fprintf(f.Out, "\n%s signs certificates for this cluster: keep it secret, or delete it.\n", cf.CAKey)
			return nil
		},
	}
	initCmd.Flags().IntVar(&nodes, "nodes", 3, "number of node certificates (ids 1..N)")
	initCmd.Flags().StringVar(&hosts, "hosts", strings.Join(pki.DefaultHosts, ","), "comma-separated DNS names and IP addresses the nodes are reached at")
	initCmd.Flags().DurationVar(&validFor, "valid-for", pki.DefaultValidFor, "validity of the certificates")
	cmd.AddCommand(initCmd)
	return cmd
}

// nodeTLSFlags are the `raftd run` flags of a node with certificate n for
// both ports, client-cert-auth and pinned member ids.
func nodeTLSFlags(n pki.Files) string {
	return fmt.Sprintf("--cert-file %s --key-file %s --trusted-ca-file %s --client-cert-auth \\\n    --peer-cert-file %[1]s --peer-key-file %[2]s --peer-trusted-ca-file %[3]s --peer-cert-pin-id",
		n.CertFile, n.KeyFile, n.TrustedCAFile)
}

// clientTLSEnv is the environment that client commands take c from.
func clientTLSEnv(c pki.Files) string {
	return fmt.Sprintf("  export RAFTD_CACERT=%s RAFTD_CERT=%s RAFTD_KEY=%s", c.TrustedCAFile, c.CertFile, c.KeyFile)
}
