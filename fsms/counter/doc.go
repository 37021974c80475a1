// Package counter is the bundled counter FSM (name "counter", version 1):
// one integer, changed by {"op":"add","delta":N}. Specified in
// docs/plugin-protocol.md. It makes double application visible, which is
// why crash-recovery tests use it.
package counter
