package cli

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/raftd/raftd/cmd/raftd/internal/progress"
	"github.com/raftd/raftd/cmd/raftd/internal/view"
	"github.com/raftd/raftd/core/client"
	"github.com/raftd/raftd/plugin/conformance"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"github.com/spf13/cobra"
)

// NewCmdFSM returns `raftd fsm status|activate|reload|skip|verify|test`.
func NewCmdFSM(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fsm",
		Short: "FSM plugin status, plugin reload, rolling version activation, skipping a command apply halted on, conformance tests",
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
				return view.StatusJSON(f.Out, resp)
			}
			return view.FSMTable(f.Out, resp)
		},
	}
	addClientFlags(statusCmd, &st.ClientOptions)
	addJSONFlag(statusCmd, &st.JSON, "the object of raftd status --json")

	act := &ClientOptions{}
	var allowDowngrade bool
	activateCmd := &cobra.Command{
		Use:   "activate VERSION",
		Short: "Activate FSM version VERSION on every replica at the same log index",
		Long: `Activate commits a version entry through the log; every replica passes
VERSION to its plugin from the next index on. Refused (exit 3) while any
member's plugin does not support VERSION, and below the active version
unless --allow-downgrade and every plugin declares that safe.`,
		Args: exactArgs(1, "VERSION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := strconv.ParseUint(args[0], 10, 32)
			if err != nil || v == 0 {
				return usageErrorf("fsm activate: version %q is not a positive integer", args[0])
			}
			resp, err := rpc(cmd.Context(), f, act, "fsm activate", apiv1.RaftdClient.ActivateFSMVersion, &apiv1.ActivateFSMVersionRequest{Version: uint32(v), AllowDowngrade: allowDowngrade})
			if err != nil {
				return err
			}
			fmt.Fprintf(f.Out, "FSM version %d active from index %d\n", v, resp.GetIndex())
			return nil
		},
	}
	addClientFlags(activateCmd, act)
	activateCmd.Flags().BoolVar(&allowDowngrade, "allow-downgrade", false, "allow a version below the active one (if every plugin declares it safe)")

	ro := &ClientOptions{}
	var rpath, rsum string
	reloadCmd := &cobra.Command{
		Use:   "reload --addr NODE --fsm PATH [--fsm-sha256 HEX]",
		Short: "Replace one node's FSM plugin without restarting the node",
		Long: `Reload starts PATH (on the node's machine), hands it the state, checks it and
switches to it at an exact log index; raftd and its Raft role keep running.
On any failure the old plugin stays (exit 3). See docs/upgrades.md.`,
		Example: `  raftd fsm reload --addr 127.0.0.1:8201 --fsm /opt/raftd/bin/raftd-fsm-kv`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if rpath == "" || strings.Contains(ro.Addrs, ",") {
				return usageErrorf("fsm reload: give one node (--addr) and the plugin (--fsm PATH)")
			}
			abs, _ := filepath.Abs(rpath)
			r, err := rpc(cmd.Context(), f, ro, "fsm reload", apiv1.RaftdClient.ReloadFSM, &apiv1.ReloadFSMRequest{Path: abs, Sha256: rsum})
			if err != nil {
				return err
			}
			view.Reload(f.Out, r)
			return nil
		},
	}
	addClientFlags(reloadCmd, ro)
	reloadCmd.Flags().StringVar(&rpath, "fsm", "", "path to the new plugin binary")
	reloadCmd.Flags().StringVar(&rsum, "fsm-sha256", "", "refuse unless the plugin binary has this SHA-256 (hex)")
	ro.Timeout, reloadCmd.Flags().Lookup("timeout").DefValue = view.ReloadTimeout, view.ReloadTimeout.String()

	skip := &ClientOptions{}
	skipCmd := &cobra.Command{
		Use:   "skip INDEX",
		Short: "Skip the command at INDEX on every node whose apply is halted there",
		Long: `A node halts apply at a command its FSM plugin keeps failing on (an error,
a panic, the Apply watchdog) after restarting, restoring and replaying it;
raftd status shows "halted" with the index and the reason. The node stays
in the cluster and serves stale reads, but applies nothing more.

Skip commits an admin entry through the log: every node halted at INDEX
skips exactly that command (it is never applied there; a client still
waiting for it gets "not applied: skipped") and resumes. Nodes that are
not halted at INDEX ignore the entry. Skip a command only when every node
halted on it: a node that applied it and one that skipped it differ.
A node halted because its state diverged at a digest checkpoint (the
reason names the checkpoint) does not resume on a skip: rebuild it
(docs/operations.md "Divergence"). Exit 0 once the entry is applied on
the leader.`,
		Example: `  raftd status --json | jq '.nodes[] | {id, halted}'
  raftd fsm skip 1234`,
		Args: exactArgs(1, "INDEX"),
		RunE: func(cmd *cobra.Command, args []string) error {
			idx, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil || idx == 0 {
				return usageErrorf("fsm skip: index %q is not a positive integer", args[0])
			}
			resp, err := rpc(cmd.Context(), f, skip, "fsm skip", apiv1.RaftdClient.SkipFSMCommand, &apiv1.SkipFSMCommandRequest{Index: idx})
			if err != nil {
				return err
			}
			what := "the leader was not halted there"
			if resp.GetSkipped() {
				what = "the leader skipped it"
			}
			fmt.Fprintf(f.Out, "skip of the command at index %d committed at index %d (%s); nodes halted on the command at %d resume (not those halted for divergence)\n", idx, resp.GetSkipIndex(), what, idx)
			return nil
		},
	}
	addClientFlags(skipCmd, skip)

	vo := &StatusOptions{}
	verifyCmd := &cobra.Command{
		Use: "verify", Args: noArgs,
		Short: "Commit a digest checkpoint now and compare every node's state digest at it",
		Long: `Every node hashes its state at a new checkpoint entry; one whose digest differs from the majority's
(every node, if none has one) halts there (raftd status; rebuild it: docs/operations.md "Divergence").
Exit 0 when all agree, 1 when some differ or did not answer (named), 3 when no checkpoint was committed.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := rpc(cmd.Context(), f, &vo.ClientOptions, "fsm verify", apiv1.RaftdClient.VerifyFSM, &apiv1.VerifyFSMRequest{})
			if err != nil {
				return err
			}
			differ, verr := client.CheckVerify(resp)
			return errors.Join(view.Verify(f.Out, resp, differ, vo.JSON), withCode(ExitFailure, verr))
		},
	}
	addClientFlags(verifyCmd, &vo.ClientOptions)
	addJSONFlag(verifyCmd, &vo.JSON, view.VerifyJSONShape)
	verifyCmd.Flags().Lookup("timeout").DefValue = "1m"
	_ = verifyCmd.Flags().Set("timeout", "1m") // every node hashes its whole state

	to := conformance.Options{}
	testCmd := &cobra.Command{
		Use:   "test --fsm PLUGIN",
		Short: "Run the plugin conformance suite (determinism, snapshot/restore, digest) against a plugin binary",
		Long: `Test starts two instances of PLUGIN (or PLUGIN and --fsm2), feeds both the
same generated command stream, compares every result and the state digests
at checkpoints, and checks snapshot -> restore and restart behaviour. With
--fsm2 another release of the FSM, the commands use only the versions both
support. Exit 0 on PASS, 1 with the first divergence otherwise.`,
		Example: `  raftd fsm test --fsm ./bin/raftd-fsm-kv
  raftd fsm test --fsm ./bin/raftd-fsm-kv --fsm2 ./fsms/node-kv/raftd-fsm-node-kv --entries 2000
  raftd fsm test ./bin/raftd-fsm-kv          # the plugin may also be given as the only argument`,
		Args: rangeArgs(0, 1, "at most one PLUGIN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 1 && to.FSM != "" && to.FSM != args[0]:
				return usageErrorf("fsm test: give the plugin once, with --fsm or as the argument")
			case len(args) == 1:
				to.FSM = args[0]
			case to.FSM == "":
				return usageErrorf("fsm test: --fsm PLUGIN is required")
			}
			if progress.IsTerminal(f.ErrOut) {
				to.Progress = f.ErrOut
			}
			rep, err := conformance.Run(cmd.Context(), to)
			if err != nil {
				return withCode(ExitFailure, fmt.Errorf("fsm test %s: %s", to.FSM, view.FirstLine(err.Error())))
			}
			fmt.Fprint(f.Out, rep.String())
			return nil
		},
	}
	testCmd.Flags().StringVar(&to.FSM, "fsm", "", "path to the plugin binary to test")
	testCmd.Flags().StringVar(&to.FSM2, "fsm2", "", "a second implementation or release to compare against, at the versions both support (default: a second instance of PLUGIN)")
	testCmd.Flags().Int64Var(&to.Seed, "seed", 1, "seed of the command generator")
	testCmd.Flags().IntVar(&to.Entries, "entries", 10000, "number of generated entries")
	testCmd.Flags().StringVar(&to.Commands, "commands", "", "commands file instead of the built-in generator (required for FSMs other than counter, kv, queue)")
	testCmd.Flags().IntVar(&to.CheckpointEvery, "checkpoint-every", 1000, "compare digests every this many entries")
	cmd.AddCommand(statusCmd, activateCmd, reloadCmd, skipCmd, verifyCmd, testCmd)
	return cmd
}
