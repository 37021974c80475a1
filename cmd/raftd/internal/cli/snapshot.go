package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/raftd/raftd/cmd/raftd/internal/progress"
	"github.com/raftd/raftd/cmd/raftd/internal/view"
	"github.com/raftd/raftd/core/client"
	"github.com/raftd/raftd/core/daemon"
	"github.com/raftd/raftd/core/node"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"github.com/spf13/cobra"
)

// SnapshotSaveOptions configures `raftd snapshot save`.
type SnapshotSaveOptions struct {
	ClientOptions
	File    string
	TakeNew bool
	// Progress is set when progress goes to stderr (--progress, or a
	// terminal).
	Progress bool
}

// NewCmdSnapshot returns `raftd snapshot save|restore`.
func NewCmdSnapshot(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Download the leader's snapshot, or seed a data dir from one",
		Args:  noArgs,
	}
	save := &SnapshotSaveOptions{}
	saveCmd := &cobra.Command{
		Use:   "save FILE",
		Short: "Download the leader's latest snapshot to FILE (any node may be addressed)",
		Args:  exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			save.File = args[0]
			save.Progress = progress.Enabled(f.ErrOut, cmd.Flags().Changed("progress"), save.Progress)
			return runSnapshotSave(cmd.Context(), f, save)
		},
	}
	addClientFlags(saveCmd, &save.ClientOptions)
	saveCmd.Flags().BoolVar(&save.Progress, "progress", false, progress.FlagUsage)
	saveCmd.Flags().BoolVar(&save.TakeNew, "new", false, "take a fresh snapshot at the applied index first")
	saveCmd.Flags().Lookup("timeout").DefValue = "5m"
	_ = saveCmd.Flags().Set("timeout", "5m")

	ro := &SnapshotRestoreOptions{}
	restoreCmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Seed a fresh single-node data dir from a snapshot FILE (disaster recovery)",
		Long: `Restore writes the snapshot FILE (from raftd snapshot save) into an empty
--data-dir as a one-member cluster of node --id at --raft-addr. Start it with
raftd run and the same --id, --data-dir and --raft-addr, then add members.`,
		Example: `  raftd snapshot save --addr 127.0.0.1:8101 backup.snap
  raftd snapshot restore backup.snap --data-dir /tmp/r1 --raft-addr 127.0.0.1:7101
  raftd run --fsm ./bin/raftd-fsm-kv --data-dir /tmp/r1 --raft-addr 127.0.0.1:7101 --api-addr 127.0.0.1:8101`,
		Args: exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ro.File = args[0]
			ro.Progress = progress.Enabled(f.ErrOut, cmd.Flags().Changed("progress"), ro.Progress)
			return runSnapshotRestore(f, ro, cmd.Flags().Changed("cluster-id"))
		},
	}
	restoreCmd.Flags().BoolVar(&ro.Progress, "progress", false, progress.FlagUsage)
	restoreCmd.Flags().StringVar(&ro.DataDir, "data-dir", DefaultDataDir, "the new, empty data dir")
	restoreCmd.Flags().Uint64Var(&ro.ID, "id", 1, "id of the node that will run on it")
	restoreCmd.Flags().StringVar(&ro.RaftAddr, "raft-addr", DefaultRaftAddr, "peer address of that node")
	restoreCmd.Flags().StringVar(&ro.ClusterID, "cluster-id", "", "cluster id (default: derived from --id and --raft-addr, as raftd run does)")
	cmd.AddCommand(saveCmd, restoreCmd)
	return cmd
}

func runSnapshotSave(ctx context.Context, f *Factory, o *SnapshotSaveOptions) error {
	tmp, err := os.CreateTemp(filepath.Dir(o.File), ".raftd-snapshot-*")
	if err != nil {
		return withCode(ExitFailure, fmt.Errorf("snapshot save: %w", err))
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	// The leader's snapshot is the one to keep: ask the cluster which node
	// leads and download from its client address. If that cannot be
	// learned, the addressed node's own latest snapshot is taken instead.
	from := o.ClientOptions
	source := "the addressed node"
	st, err := fetchStatus(ctx, f, &o.ClientOptions)
	if err == nil {
		from.Addrs, err = client.LeaderAPIAddr(st)
	}
	if err == nil {
		source = fmt.Sprintf("leader %d", st.GetLeader())
	} else {
		from.Addrs = o.Addrs
		fmt.Fprintf(f.ErrOut, "snapshot save: leader unknown (%v); downloading from the addressed node\n", err)
	}
	c, err := from.client(f)
	if err != nil {
		return err
	}
	meter := progress.For(f.ErrOut, o.Progress, "snapshot save")
	hdr, err := c.DownloadSnapshot(ctx, o.TakeNew, meter.Writer(tmp), func(h *apiv1.SnapshotHeader) { meter.SetTotal(h.GetSize()) })
	if err != nil {
		return exitErr("snapshot save", o.Timeout, err)
	}
	meter.Done()
	if size := hdr.GetSize(); size >= 0 && size != meter.N() {
		return withCode(ExitFailure, fmt.Errorf("snapshot save: received %d bytes, the node announced %d", meter.N(), size))
	}
	if err := tmp.Sync(); err != nil {
		return withCode(ExitFailure, fmt.Errorf("snapshot save: %w", err))
	}
	if err := tmp.Close(); err != nil {
		return withCode(ExitFailure, fmt.Errorf("snapshot save: %w", err))
	}
	if err := os.Rename(tmp.Name(), o.File); err != nil {
		return withCode(ExitFailure, fmt.Errorf("snapshot save: %w", err))
	}
	fmt.Fprintf(f.Out, "saved snapshot at index %d term %d (%d bytes) from %s to %s\n", hdr.GetIndex(), hdr.GetTerm(), meter.N(), source, o.File)
	return nil
}

// SnapshotRestoreOptions configures `raftd snapshot restore`.
type SnapshotRestoreOptions struct {
	File      string
	DataDir   string
	ID        uint64
	RaftAddr  string
	ClusterID string
	Progress  bool
}

func runSnapshotRestore(f *Factory, o *SnapshotRestoreOptions, clusterIDSet bool) error {
	if o.ID == 0 {
		return usageErrorf("snapshot restore: --id must be a positive integer")
	}
	if o.DataDir == "" {
		return usageErrorf("snapshot restore: --data-dir must not be empty")
	}
	if !clusterIDSet {
		o.ClusterID = ""
	}
	in, err := os.Open(o.File)
	if err != nil {
		return withCode(ExitFailure, fmt.Errorf("snapshot restore: %w", err))
	}
	defer in.Close()
	meter := progress.For(f.ErrOut, o.Progress, "snapshot restore")
	if fi, err := in.Stat(); err == nil {
		meter.SetTotal(fi.Size())
	}
	hdr, clusterID, err := daemon.RestoreSnapshot(o.DataDir, node.Peer{ID: o.ID, RaftAddr: o.RaftAddr}, o.ClusterID, meter.Reader(in))
	meter.Done()
	if err != nil {
		return withCode(ExitFailure, fmt.Errorf("snapshot restore %s: %s", o.File, view.FirstLine(err.Error())))
	}
	o.ClusterID = clusterID
	fmt.Fprintf(f.Out, "restored %s (fsm %s, index %d, term %d) into %s as node %d at %s (cluster %s)\n",
		o.File, hdr.FSMName, hdr.Index, hdr.Term, o.DataDir, o.ID, o.RaftAddr, o.ClusterID)
	return nil
}
