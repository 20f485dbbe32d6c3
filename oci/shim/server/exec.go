package server

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"ketch.dev/ketch/oci/runc"
	"ketch.dev/ketch/oci/shim"
)

// maxExecOutput caps what ExecSync keeps of each stream, so a chatty
// command cannot exhaust the shim. Both streams go back to ketchd in one
// ttrpc reply, and ttrpc refuses a message over 4 MiB (closing the
// connection): two streams at this cap and the reply's other fields fit.
// kubelet keeps far less of a probe's output.
const maxExecOutput = 2<<20 - 64<<10

// ExecSync runs args in running container id as the container's own
// process (user, env, cwd, capabilities, seccomp), and returns its output
// and exit code. A command that cannot be started answers 127 (not found)
// or 126, as a shell does, with the reason on stderr. At the timeout (0:
// none) the command and its descendants are killed.
func (s *Service) ExecSync(ctx context.Context, id string, args []string, timeout time.Duration) (shim.ExecResult, error) {
	c, err := s.execTarget(id, args)
	if err != nil {
		return shim.ExecResult{}, err
	}
	proc := c.execProcess(args, false)

	// Capped, so a chatty command cannot exhaust the shim; what goes past
	// the cap is read and dropped, so the command never blocks on a pipe.
	stdout, stderr := capture{limit: maxExecOutput}, capture{limit: maxExecOutput}
	var copiers sync.WaitGroup
	var readers, writers []*os.File
	for _, buf := range []*capture{&stdout, &stderr} {
		r, w, err := os.Pipe()
		if err != nil {
			closeFiles(readers, writers)
			return shim.ExecResult{}, err
		}
		readers, writers = append(readers, r), append(writers, w)
		copiers.Add(1)
		go func() {
			defer copiers.Done()
			_, _ = io.Copy(buf, r)
		}()
	}
	proc.Stdout, proc.Stderr = writers[0], writers[1]
	pid, done, err := s.runExec(c, proc)
	closeFiles(nil, writers)
	if err != nil {
		closeFiles(readers, nil)
		copiers.Wait()
		return shim.ExecResult{Stderr: []byte(err.Error() + "\n"), ExitCode: execFailureCode(err)}, nil
	}

	var res shim.ExecResult
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case e := <-done:
		res.ExitCode = e.Code
	case <-expired:
		killTree(pid)
		res.ExitCode, res.TimedOut = (<-done).Code, true
	case <-ctx.Done():
		killTree(pid)
		<-done
		closeFiles(readers, nil)
		copiers.Wait()
		return shim.ExecResult{}, fmt.Errorf("exec in %s: %w", id, ctx.Err())
	}
	// A background child of the command may hold the pipes; its output
	// after the command's exit is not the command's.
	waitAtMost(&copiers, drainTimeout)
	closeFiles(readers, nil)
	copiers.Wait()
	res.Stdout, res.Stderr = stdout.buf, stderr.buf
	return res, nil
}

// execProcess is a command run in c as c's own process is: its user,
// env and cwd (capabilities, seccomp and the rest come with c's config).
func (c *container) execProcess(args []string, tty bool) *runc.Process {
	p := *c.process
	p.Args, p.Terminal = args, tty
	proc := processFromSpec(&p)
	proc.Init = false
	return proc
}

// runExec starts proc in c; done gets its exit once the reaper has it.
func (s *Service) runExec(c *container, proc *runc.Process) (int, <-chan shim.Exit, error) {
	done := make(chan shim.Exit, 1)
	pid, err := s.reaper.start(func() (int, error) {
		r, err := s.runc.Run(c.id, nil, proc)
		return r.Pid, err
	}, func(e shim.Exit) { done <- e })
	return pid, done, err
}

func execFailureCode(err error) int {
	msg := err.Error()
	if strings.Contains(msg, "not found") || strings.Contains(msg, "no such file") {
		return 127
	}
	return 126
}

// killTree KILLs pid and every descendant it still has.
func killTree(pid int) {
	for _, kid := range descendants(pid) {
		_ = syscall.Kill(kid, syscall.SIGKILL)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

func descendants(pid int) []int {
	var out []int
	for _, kid := range runc.Children(pid) {
		out = append(out, kid)
		out = append(out, descendants(kid)...)
	}
	return out
}

func closeFiles(a, b []*os.File) {
	for _, f := range append(a, b...) {
		f.Close()
	}
}
