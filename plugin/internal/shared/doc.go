// Package shared holds what both sides of the plugin connection need: the
// go-plugin handshake, the GRPCPlugin that registers the StateMachine
// service, the server adapter from fsm.FSM to proto/fsm/v1, and the size
// limits. FSM authors never import it.
package shared
