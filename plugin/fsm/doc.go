// Package fsm defines the interface a Go FSM author implements. It imports
// neither go-plugin nor gRPC: plugin/sdk serves an FSM as a plugin process,
// and plugin/host is the client side. The wire contract is
// docs/plugin-protocol.md.
//
// A plugin binary is one line of logic:
//
//	func main() { sdk.Serve(kv.New()) }
package fsm
