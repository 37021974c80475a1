package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// SnapshotSaveOptions configures `raftd snapshot save`.
type SnapshotSaveOptions struct {
	ClientOptions
	File    string
	TakeNew bool
}

// NewCmdSnapshot returns `raftd snapshot save|restore`.
func NewCmdSnapshot(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Download a node's snapshot, or seed a data dir from one",
		Args:  noArgs,
	}
	save := &SnapshotSaveOptions{}
	saveCmd := &cobra.Command{
		Use:   "save FILE",
		Short: "Download the answering node's latest snapshot to FILE",
		Args:  exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			save.File = args[0]
			return runSnapshotSave(cmd.Context(), f, save)
		},
	}
	addClientFlags(saveCmd, &save.ClientOptions)
	saveCmd.Flags().BoolVar(&save.TakeNew, "new", false, "take a fresh snapshot at the applied index first")
	saveCmd.Flags().Lookup("timeout").DefValue = "5m"
	_ = saveCmd.Flags().Set("timeout", "5m")

	restoreCmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Seed a fresh single-node data dir from a snapshot FILE (disaster recovery)",
		Args:  exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withCode(ExitFailure, errors.New("snapshot restore: not supported yet by this build"))
		},
	}
	cmd.AddCommand(saveCmd, restoreCmd)
	return cmd
}

// progressWriter reports bytes written to a terminal.
type progressWriter struct {
	w     io.Writer
	out   io.Writer
	n     int64
	total int64
	tty   bool
	last  int64
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += int64(n)
	if p.tty && p.n-p.last >= 1<<20 {
		p.last = p.n
		if p.total > 0 {
			fmt.Fprintf(p.out, "\r%d / %d MiB (%d%%)", p.n>>20, p.total>>20, p.n*100/p.total)
		} else {
			fmt.Fprintf(p.out, "\r%d MiB", p.n>>20)
		}
	}
	return n, err
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func runSnapshotSave(ctx context.Context, f *Factory, o *SnapshotSaveOptions) error {
	tmp, err := os.CreateTemp(filepath.Dir(o.File), ".raftd-snapshot-*")
	if err != nil {
		return withCode(ExitFailure, fmt.Errorf("snapshot save: %w", err))
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	var hdr *apiv1.SnapshotHeader
	pw := &progressWriter{w: tmp, out: f.ErrOut, tty: isTerminal(f.ErrOut)}
	err = o.call(ctx, f, "snapshot save", func(ctx context.Context, c apiv1.RaftdClient, tr *metadata.MD) error {
		stream, err := c.DownloadSnapshot(ctx, &apiv1.DownloadSnapshotRequest{TakeNew: o.TakeNew}, grpc.Trailer(tr))
		if err != nil {
			return err
		}
		for {
			ch, err := stream.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if ch.GetHeader() != nil {
				hdr = ch.GetHeader()
				pw.total = hdr.GetSize()
			}
			if _, err := pw.Write(ch.GetData()); err != nil {
				return err
			}
		}
	})
	if err != nil {
		return err
	}
	if hdr == nil {
		return withCode(ExitFailure, errors.New("snapshot save: the node sent no snapshot header"))
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
	if pw.tty {
		fmt.Fprintln(f.ErrOut)
	}
	fmt.Fprintf(f.Out, "saved snapshot at index %d term %d (%d bytes) to %s\n", hdr.GetIndex(), hdr.GetTerm(), pw.n, o.File)
	return nil
}
