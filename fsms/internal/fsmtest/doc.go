// Package fsmtest holds test helpers shared by the bundled FSMs' tests.
package fsmtest
