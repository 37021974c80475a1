// Package sdk turns an fsm.FSM into a raftd plugin binary:
//
//	func main() { sdk.Serve(kv.New()) }
//
// Serve speaks the go-plugin handshake with the RAFTD_PLUGIN cookie, serves
// the StateMachine service over gRPC with AutoMTLS, gRPC health ("plugin")
// and the controller's Shutdown, raises the receive limit to 64 MiB,
// ignores SIGINT, exits when the parent process dies, and runs on one
// processor unless GOMAXPROCS is set. The wire contract
// is docs/plugin-protocol.md.
package sdk
