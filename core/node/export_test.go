package node

// Exported to the external test package, which may import what imports
// this package (core/statemachine, fsms/kv).
var (
	BenchPropose = benchPropose
	BenchRead    = benchRead
)
