package cri

import (
	"os"
	"testing"
)

// TestMain has the Servers under test watch no process: their PIDs are
// made up, and some real process's maybe. Every exit is waited for at once
// instead, as where the kernel has no pidfds; TestExitsWatched swaps in a
// real pidfd.Set over processes of its own.
func TestMain(m *testing.M) {
	newExitSet = func() (exitSet, error) { return noExits{}, nil }
	os.Exit(m.Run())
}

type noExits struct{}

func (noExits) Watch(int, func()) bool { return false }
func (noExits) Close() error           { return nil }
