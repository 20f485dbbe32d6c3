package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"golang.org/x/sys/unix"

	"ketch.dev/ketch/pidfd"
)

// pipeGrace bounds how long a plugin's output pipes may stay open after the
// plugin exited or was killed. A descendant that escaped the kill (setsid)
// or a daemon a plugin started could otherwise hold them open for ever.
const pipeGrace = time.Second

// pluginExec runs CNI plugins as libcni's RawExec does, with one change that
// makes the request deadline real: when ctx ends, the plugin's whole process
// group is killed. RawExec kills only the plugin's own process, and a shell
// plugin's children (a hung iptables, a `sleep`) keep its stdout open, so the
// call would wait for them long after the deadline.
type pluginExec struct {
	version.PluginDecoder
}

var _ invoke.Exec = &pluginExec{}

func (*pluginExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (*pluginExec) ExecPlugin(ctx context.Context, path string, stdin []byte, env []string) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, path)
		cmd.Env = env
		cmd.Stdin = bytes.NewReader(stdin)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
		cmd.WaitDelay = pipeGrace
		err := cmd.Start()
		if err == nil {
			err = pidfd.WaitCmd(cmd) // not cmd.Wait: no thread per plugin running
		}
		switch {
		case err == nil:
			return stdout.Bytes(), nil
		case ctx.Err() != nil:
			return nil, fmt.Errorf("%s killed: %w", filepath.Base(path), context.Cause(ctx))
		case errors.Is(err, syscall.ETXTBSY) && attempt < 5:
			// The binary is being written (a plugin installer is copying it
			// in, or a forked child still holds a write fd); libcni retries too.
			select {
			case <-time.After(200 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		}
		return nil, pluginError(err, stdout.Bytes(), stderr.Bytes())
	}
}

// pluginError keeps the plugin's own error (CNI plugins print a JSON error on
// stdout) and otherwise whatever it said on stderr.
func pluginError(err error, stdout, stderr []byte) error {
	e := &types.Error{}
	switch {
	case len(stdout) > 0:
		if json.Unmarshal(stdout, e) != nil || e.Msg == "" {
			e.Msg = fmt.Sprintf("netplugin failed (%v) with output %q", err, stdout)
		}
	case len(stderr) > 0:
		e.Msg = fmt.Sprintf("netplugin failed: %v: %q", err, stderr)
	default:
		e.Msg = fmt.Sprintf("netplugin failed with no error message: %v", err)
	}
	return e
}
