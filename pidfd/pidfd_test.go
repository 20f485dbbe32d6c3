package pidfd

import (
	"context"
	"errors"
	"os/exec"
	"runtime"
	"testing"
	"time"
)

func TestWaitCmd(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		cancel time.Duration // kill through the command's context after this
		code   int
	}{
		{"exit 0", []string{"true"}, 0, 0},
		{"exit 3", []string{"sh", "-c", "exit 3"}, 0, 3},
		{"killed by its context", []string{"sleep", "30"}, 50 * time.Millisecond, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.cancel > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.cancel)
				defer cancel()
			}
			cmd := exec.CommandContext(ctx, tc.args[0], tc.args[1:]...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			err := WaitCmd(cmd)
			var ee *exec.ExitError
			switch {
			case tc.code == 0 && err != nil:
				t.Fatalf("WaitCmd: %v", err)
			case tc.code != 0 && !errors.As(err, &ee):
				t.Fatalf("WaitCmd: %v, want an exit error", err)
			case cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != tc.code:
				t.Fatalf("exit code %v, want %d", cmd.ProcessState, tc.code)
			}
		})
	}
}

// TestSet: each watch fires once its own process has exited, not before,
// from one goroutine however many are watched; a process already gone
// cannot be watched.
func TestSet(t *testing.T) {
	s, err := NewSet()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 50
	fired := make(chan int, n+1)
	var cmds []*exec.Cmd
	for i := range n {
		cmd := exec.Command("sleep", "30")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		cmds = append(cmds, cmd)
		if !s.Watch(cmd.Process.Pid, func() { fired <- i }) {
			t.Fatalf("cannot watch process %d", i)
		}
	}
	before := runtime.NumGoroutine()
	// Every other one exits; the others' watches must not fire.
	for i := 0; i < n; i += 2 {
		_ = cmds[i].Process.Kill()
	}
	got := map[int]bool{}
	for range n / 2 {
		select {
		case i := <-fired:
			if i%2 != 0 || got[i] {
				t.Fatalf("watch %d fired (again: %v) while its process runs", i, got[i])
			}
			got[i] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d exits seen", len(got), n/2)
		}
	}
	if g := runtime.NumGoroutine(); g > before {
		t.Errorf("%d goroutines while watching, %d before the exits", g, before)
	}
	// A reaped process is gone: not watchable (PIDs are handed out in
	// turn, so its PID is not someone else's yet).
	_ = cmds[0].Wait()
	if s.Watch(cmds[0].Process.Pid, func() {}) {
		t.Error("a reaped process could be watched")
	}
	select {
	case i := <-fired:
		t.Errorf("watch %d fired after the others", i)
	case <-time.After(100 * time.Millisecond):
	}
}
