// Package queue is the bundled FIFO queue FSM (name "queue", version 1) of
// strings. Specified in docs/plugin-protocol.md.
package queue
