package cli

import (
	"context"
	"crypto/tls"
	"strings"
	"time"

	"github.com/raftd/raftd/core/client"
	"github.com/raftd/raftd/core/pki"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
)

// DefaultAddr is the client API address client commands use by default.
const DefaultAddr = "127.0.0.1:7000"

// ClientOptions are the flags shared by every client command.
type ClientOptions struct {
	// Addrs is the comma-separated --addr list (or $RAFTD_ADDR).
	Addrs string
	// Timeout bounds the whole command.
	Timeout time.Duration
	// TLS is --cacert, --cert and --key (or $RAFTD_CACERT, $RAFTD_CERT,
	// $RAFTD_KEY); any of them turns TLS on.
	TLS pki.Files
}

func addClientFlags(cmd *cobra.Command, o *ClientOptions) {
	cmd.Flags().StringVar(&o.Addrs, "addr", "", "client API address(es), comma-separated, tried in turn (default $RAFTD_ADDR or "+DefaultAddr+")")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 5*time.Second, "give up after this long")
	cmd.Flags().StringVar(&o.TLS.TrustedCAFile, "cacert", "", "connect over TLS, trusting this CA (default $RAFTD_CACERT)")
	cmd.Flags().StringVar(&o.TLS.CertFile, "cert", "", "client certificate (default $RAFTD_CERT)")
	cmd.Flags().StringVar(&o.TLS.KeyFile, "key", "", "client certificate's key (default $RAFTD_KEY)")
}

// client returns the cluster client of the options, on --addr, then
// $RAFTD_ADDR, then the default, over TLS if --cacert, --cert or --key
// (or their variables) are set; errors are usage errors.
func (o *ClientOptions) client(f *Factory) (*client.Client, error) {
	for _, v := range []struct {
		p   *string
		env string
	}{{&o.Addrs, "RAFTD_ADDR"}, {&o.TLS.TrustedCAFile, "RAFTD_CACERT"}, {&o.TLS.CertFile, "RAFTD_CERT"}, {&o.TLS.KeyFile, "RAFTD_KEY"}} {
		if *v.p == "" && f.Getenv != nil {
			*v.p = f.Getenv(v.env)
		}
	}
	var tc *tls.Config
	if o.TLS.Enabled() {
		var err error
		if tc, err = pki.ClientConfig(o.TLS); err != nil {
			return nil, usageErrorf("%v", err)
		}
	}
	s := o.Addrs
	if s == "" {
		s = DefaultAddr
	}
	var out []string
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if !strings.Contains(a, ":") {
			return nil, usageErrorf("--addr: %q is not host:port", a)
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, usageErrorf("--addr: no address given")
	}
	if o.Timeout <= 0 {
		return nil, usageErrorf("--timeout must be positive")
	}
	return &client.Client{Addrs: out, Timeout: o.Timeout, TLS: tc}, nil
}

// rpc calls one unary method through the cluster client (core/client:
// addresses tried in turn, refusals another node may take retried until
// --timeout) and maps a failure to the command's exit (exit.go). For
// example rpc(ctx, f, o, "apply", apiv1.RaftdClient.Apply, req).
func rpc[Req, Resp any](ctx context.Context, f *Factory, o *ClientOptions, op string, method func(apiv1.RaftdClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	c, err := o.client(f)
	if err != nil {
		var zero Resp
		return zero, err
	}
	resp, err := client.Do(ctx, c, method, req)
	return resp, exitErr(op, o.Timeout, err)
}
