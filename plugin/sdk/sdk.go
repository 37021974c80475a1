package sdk

import (
	"os"
	"runtime"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/raftd/raftd/plugin/fsm"
	"github.com/raftd/raftd/plugin/internal/shared"
)

// ParentPollInterval is how often Serve checks that its parent is alive.
const ParentPollInterval = 500 * time.Millisecond

// Serve serves f until the host shuts the plugin down, then returns (the
// process should then exit). When the binary is started by hand (no
// cookie), it prints an explanation to stderr and exits with status 1.
//
// Unless the environment sets GOMAXPROCS, Serve runs Go code on one
// thread (runtime.GOMAXPROCS(1)): the plugin serves one host and runs every
// FSM call under one lock, so a second processor only adds hand-offs of
// goroutines between OS threads, each a futex wake and a context switch.
// On a 2-core machine that halves the plugin's CPU time per Apply round
// trip and cuts its latency by a fifth (plugin/host BenchmarkApplyBatches).
// A plugin that does parallel work of its own sets GOMAXPROCS. A Restore
// (a snapshot installed in the plugin) runs on two, since the gRPC
// transport's reading and decrypting of the stream then overlaps the FSM's
// decoding: a 1 GiB kv restore is about an eighth faster.
func Serve(f fsm.FSM) {
	restoreProcs := 0
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
		restoreProcs = min(2, runtime.NumCPU())
	}
	go watchParent(os.Getppid(), ParentPollInterval)
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: shared.Handshake,
		Plugins:         goplugin.PluginSet{shared.PluginName: &shared.GRPCPlugin{Impl: f, RawChunks: true, RestoreProcs: restoreProcs}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			opts = append(opts, grpc.MaxRecvMsgSize(shared.MaxMsgBytes), grpc.MaxSendMsgSize(shared.MaxMsgBytes))
			opts = append(opts, shared.ServerOptions()...)
			return grpc.NewServer(opts...)
		},
	})
}

// watchParent exits the process when the parent changes (the host died and
// the plugin was re-parented). NB: polling getppid is the portable choice;
// Linux's PR_SET_PDEATHSIG would be immediate but is tied to the parent
// thread, not the process, in a Go parent.
func watchParent(ppid int, every time.Duration) {
	if ppid <= 1 {
		return // started by init or a subreaper directly: nothing to watch
	}
	for range time.Tick(every) {
		if os.Getppid() != ppid {
			os.Exit(0)
		}
	}
}
