// Package testbin builds plugin binaries for tests that run real plugin
// processes.
package testbin
