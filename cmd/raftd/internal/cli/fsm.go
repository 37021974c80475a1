package cli

import (
	"context"
	"fmt"
	"strconv"
	"text/tabwriter"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// FSMTestFunc runs the plugin conformance suite against the plugin binary at
// path, writing a report to the factory's Out. It is nil until a conformance
// package is wired in (see fsm_test_wiring.go).
var FSMTestFunc func(ctx context.Context, f *Factory, path string) error

// NewCmdFSM returns `raftd fsm status|activate|test`.
func NewCmdFSM(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fsm",
		Short: "FSM plugin status, rolling version activation, conformance tests",
		Args:  noArgs,
	}
	st := &StatusOptions{}
	statusCmd := &cobra.Command{
		Use: "status", Short: "Per node: plugin name, binary digest, supported versions; the active version", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := fetchStatus(cmd.Context(), f, &st.ClientOptions)
			if err != nil {
				return err
			}
			if st.JSON {
				return writeStatusJSON(f.Out, resp)
			}
			tw := tabwriter.NewWriter(f.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tFSM\tSUPPORTS\tACTIVE\tACTIVATED AT\tBINARY SHA256")
			for _, n := range resp.GetNodes() {
				if n.GetError() != "" {
					fmt.Fprintf(tw, "%d\tunreachable: %s\n", n.GetId(), oneLine(n.GetError()))
					continue
				}
				x := n.GetFsm()
				fmt.Fprintf(tw, "%d\t%s\t[%d, %d]\t%d\t%d\t%s\n", n.GetId(), dash(x.GetName()), x.GetMinVersion(), x.GetMaxVersion(), x.GetVersion(), x.GetActivatedIndex(), dash(x.GetBinarySha256()))
			}
			return tw.Flush()
		},
	}
	addClientFlags(statusCmd, &st.ClientOptions)
	statusCmd.Flags().BoolVar(&st.JSON, "json", false, "print the status as JSON")

	act := &ClientOptions{}
	activateCmd := &cobra.Command{
		Use:   "activate VERSION",
		Short: "Activate FSM version VERSION on every replica at the same log index",
		Long: `Activate commits a version entry through the log; every replica passes
VERSION to its plugin from the next index on. Refused (exit 3) while any
member's plugin does not support VERSION.`,
		Args: exactArgs(1, "VERSION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := strconv.ParseUint(args[0], 10, 32)
			if err != nil || v == 0 {
				return usageErrorf("fsm activate: version %q is not a positive integer", args[0])
			}
			var resp *apiv1.ActivateFSMVersionResponse
			err = act.call(cmd.Context(), f, "fsm activate", func(ctx context.Context, c apiv1.RaftdClient, tr *metadata.MD) error {
				var err error
				resp, err = c.ActivateFSMVersion(ctx, &apiv1.ActivateFSMVersionRequest{Version: uint32(v)}, grpc.Trailer(tr))
				return err
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(f.Out, "FSM version %d active from index %d\n", v, resp.GetIndex())
			return nil
		},
	}
	addClientFlags(activateCmd, act)

	testCmd := &cobra.Command{
		Use:   "test PLUGIN",
		Short: "Run the plugin conformance suite (determinism, snapshot/restore, digest) against a plugin binary",
		Args:  exactArgs(1, "PLUGIN path"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if FSMTestFunc == nil {
				return withCode(ExitFailure, fmt.Errorf("fsm test: the conformance suite is not built into this raftd"))
			}
			return FSMTestFunc(cmd.Context(), f, args[0])
		},
	}
	cmd.AddCommand(statusCmd, activateCmd, testCmd)
	return cmd
}
