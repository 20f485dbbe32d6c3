package cri

import (
	"os"
	"testing"

	"go.uber.org/mock/gomock"
	"ketch.dev/ketch/sandbox"
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

// podWithID matches the sandbox.Spec of pod id.
func podWithID(id string) gomock.Matcher {
	return gomock.Cond(func(s sandbox.Spec) bool { return s.ID == id })
}
