package cri

// Exit handling: the watchers that record a container's exit or a pod's
// death once its shim has, and the reasons kubelet shows for an exit.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/containerd/errdefs"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/metrics"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/pidfd"
	"ketch.dev/ketch/sandbox"
)

// The reasons of a container's exit, as kubelet shows them.
const (
	reasonCompleted  = "Completed"  // exit 0
	reasonError      = "Error"      // any other code
	reasonOOMKilled  = "OOMKilled"  // the kernel's OOM killer, as its cgroup counts
	reasonStartError = "StartError" // the program could not be started
	reasonShimDied   = "ShimDied"   // the pod's shim died before the exit was recorded
)

// exitSet watches processes for their exit (pidfd.Set).
type exitSet interface {
	// Watch has fn called once process pid has exited; false when pid
	// cannot be watched.
	Watch(pid int, fn func()) bool
	Close() error
}

// newExitSet makes a Server's exitSet. Unit tests replace it: their PIDs
// are made up, maybe some real process's.
var newExitSet = func() (exitSet, error) {
	s, err := pidfd.NewSet()
	if err != nil {
		return nil, err
	}
	return s, nil
}

// watchContainer records the container's exit once its shim has, whoever
// ended it, so status and lists tell the truth without asking the shim.
// Until then it holds no goroutine: pid, the container's host PID, is
// watched through a pidfd, and its exit, or the end of the connection to
// the pod's shim (shimLost), starts the wait that asks the shim for the
// exit. A container whose process cannot be watched is waited for at once.
func (s *Server) watchContainer(podID, id string, pid int) {
	if !s.watch(pid, func() { s.waitContainer(podID, id) }) {
		s.waitContainer(podID, id)
	}
}

// watch has fn called once process pid has exited; false if it cannot be
// watched.
func (s *Server) watch(pid int, fn func()) bool {
	return pid > 0 && s.exits != nil && s.exits.Watch(pid, fn)
}

// waitContainer asks the pod's shim for the container's exit, which it
// answers once there is one, and records it.
func (s *Server) waitContainer(podID, id string) {
	if !s.addWatcher() {
		return
	}
	go func() {
		defer s.watchers.Done()
		e, err := s.containers.WaitContainer(s.bg, podID, id)
		if s.bg.Err() != nil {
			return // ketchd is stopping; the next one watches again
		}
		s.containerExited(podID, id, e, err)
	}()
}

// addWatcher counts a goroutine that waits under s.bg, unless the server
// is closing: Close waits for those counted.
func (s *Server) addWatcher() bool {
	s.watchersMu.Lock()
	defer s.watchersMu.Unlock()
	if s.bg.Err() != nil {
		return false
	}
	s.watchers.Add(1)
	return true
}

// shimLost: a connection to the pod's shim ended. If the shim died, its
// pod and the containers it ran are over as far as anyone can tell, and
// their waits say so; a live shim answers them on a new connection.
func (s *Server) shimLost(podID string) {
	if s.bg.Err() != nil {
		return
	}
	s.waitSandbox(podID)
	running := store.ContainerRunning
	ctrs, err := s.store.ListContainers(store.ContainerFilter{SandboxID: podID, State: &running})
	if err != nil {
		slog.Error("containers of a pod whose shim connection ended", "pod", podID, "err", err)
	}
	for _, c := range ctrs {
		s.waitContainer(podID, c.ID)
	}
}

// containerExited writes an exit the shim reported (or the loss of the shim)
// into the record of a container that was running; it is idempotent, as
// StopContainer and the watcher both call it.
func (s *Server) containerExited(podID, id string, e shim.Exit, waitErr error) {
	reason, msg := exitReason(e), ""
	if waitErr != nil {
		if !errors.Is(waitErr, sandbox.ErrShimGone) {
			slog.Warn("wait for container", "container", id, "err", waitErr)
		}
		e = shim.Exit{Code: 255, At: time.Now()}
		reason, msg = reasonShimDied, "the pod's shim died before the container's exit was recorded: "+waitErr.Error()
	}
	if e.Result != nil || e.Truncated {
		msg = resultMessage(e.Result) // only a container that wants a result has one
	}
	rec, changed, err := s.store.ContainerExited(id, store.Exit{Code: int32(e.Code), At: e.At, Reason: reason, Message: msg, Result: e.Result, Truncated: e.Truncated})
	if err != nil && !errdefs.IsNotFound(err) {
		slog.Error("record container exit", "container", id, "pod", podID, "err", err)
	}
	if changed {
		metrics.ContainerExits.WithLabelValues(reason).Inc()
		if rec.WantResult {
			metrics.Results.WithLabelValues(strconv.FormatBool(rec.ResultTruncated)).Inc()
		}
		s.stopSidecarsOf(rec)
	}
}

// exitReason is kubelet's reason for an exit: OOMKilled from the cgroup's
// own count, else Completed or Error by the exit code.
func exitReason(e shim.Exit) string {
	switch {
	case e.OOMKilled:
		return reasonOOMKilled
	case e.Code == 0:
		return reasonCompleted
	}
	return reasonError
}

// resultMessage is a result as ContainerStatus.message carries it, where
// kubelet copies it into the pod's terminated state: one trailing newline
// trimmed (as Argo's wait container does), at most 4 KiB, valid UTF-8.
func resultMessage(b []byte) string {
	b = bytes.TrimSuffix(b, []byte("\n"))
	if len(b) > maxMessage {
		b = b[:maxMessage]
		// Do not split a character: drop an incomplete last rune.
		for i := 0; i < utf8.UTFMax && len(b) > 0 && !utf8.Valid(b); i++ {
			b = b[:len(b)-1]
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// recover adopts every pod a previous ketchd left ready (their host ports
// reserved again), and then, in the background, watches them and the
// containers it left running. A pod that cannot be adopted (its host port
// taken meanwhile) is logged and still watched: it runs, and kubelet
// decides what to do.
//
// The watches start after New returns, a few at a time, so that ketchd
// serves at once. Each asks the shim whether what the record calls running
// still runs, after its process is watched, so that an exit while ketchd
// was down (its PID maybe someone else's by now) is waited for at once,
// and one from then on is seen. A pod that died while ketchd was down is
// marked NOTREADY a moment later.
func (s *Server) recover() error {
	ready := store.SandboxReady
	pods, err := s.store.ListSandboxes(store.SandboxFilter{State: &ready})
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	running := store.ContainerRunning
	ctrs, err := s.store.ListContainers(store.ContainerFilter{State: &running})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	for _, p := range pods {
		if spec, err := storedSpec(p); err != nil {
			slog.Error("pod record unreadable", "pod", p.ID, "err", err)
		} else if err := s.sandboxes.Adopt(spec); err != nil {
			slog.Warn("adopt pod", "pod", p.ID, "err", err)
		}
	}
	metrics.PodsAdopted.Set(float64(len(pods)))
	if !s.addWatcher() {
		return nil
	}
	go func() {
		defer s.watchers.Done()
		for i := range len(pods) + len(ctrs) {
			if i%watchBatch == watchBatch-1 {
				select {
				case <-s.bg.Done():
					return
				case <-time.After(time.Millisecond):
				}
			}
			ctx, cancel := context.WithTimeout(s.bg, recoverCheckTimeout)
			if i < len(pods) {
				p := pods[i]
				// Ready also connects to the shim, whose death is then
				// seen (shimLost); a pod without a PID 1 is watched
				// through that alone.
				if p.PID > 0 && !s.watch(p.PID, func() { s.waitSandbox(p.ID) }) {
					s.waitSandbox(p.ID)
				} else if spec, err := storedSpec(p); err != nil {
					slog.Error("pod record unreadable", "pod", p.ID, "err", err)
				} else if ok, err := s.sandboxes.Ready(ctx, spec); !ok || err != nil {
					s.waitSandbox(p.ID)
				}
			} else {
				c := ctrs[i-len(pods)]
				if !s.watch(c.PID, func() { s.waitContainer(c.SandboxID, c.ID) }) {
					s.waitContainer(c.SandboxID, c.ID)
				} else if st, err := s.containerState(ctx, c); err != nil || st.Status != shim.StatusRunning || st.Pid != c.PID {
					s.waitContainer(c.SandboxID, c.ID)
				}
			}
			cancel()
		}
	}()
	return nil
}

// watchBatch is how many pods and containers recover checks a millisecond;
// recoverCheckTimeout bounds each check.
const (
	watchBatch          = 4
	recoverCheckTimeout = 10 * time.Second
)

// watchSandbox marks the pod NOTREADY once its PID 1 exits or its shim
// dies, whoever caused it, so lists never show a dead pod as ready. Like
// watchContainer, it holds no goroutine until then: pid, the pod's PID 1,
// is watched through a pidfd.
//
// A pod without a PID 1 (pid 0) lives as long as its shim, whose
// connection's end is already reported (shimLost).
func (s *Server) watchSandbox(id string, pid int) {
	if pid > 0 && !s.watch(pid, func() { s.waitSandbox(id) }) {
		s.waitSandbox(id)
	}
}

// waitSandbox asks the pod's shim to answer once its PID 1 has exited, and
// marks the pod NOTREADY then.
func (s *Server) waitSandbox(id string) {
	if !s.addWatcher() {
		return
	}
	go func() {
		defer s.watchers.Done()
		sb, err := s.store.GetSandbox(id)
		if err != nil {
			return // removed meanwhile
		}
		spec, err := storedSpec(sb)
		if err != nil {
			slog.Error("pod record unreadable", "pod", id, "err", err)
			return
		}
		if err := s.sandboxes.Wait(s.bg, spec); err != nil {
			return // ketchd is stopping
		}
		s.podDied(id)
	}()
}

// podDied marks pod id NOTREADY, and publishes that once, when its PID 1
// or its shim is gone.
func (s *Server) podDied(id string) {
	if changed, _ := s.markNotReady(id, false); changed {
		slog.Info("pod not ready: its PID 1 exited", "pod", id)
	}
}
