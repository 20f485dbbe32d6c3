package pidfd

import (
	"context"
	"errors"
	"os/exec"
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
