package cri

// Exit handling: the watchers that record a container's exit or a pod's
// death once its shim has, and the reasons kubelet shows for an exit.

import (
	"bytes"
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

// watchContainer records the container's exit once its shim has, whoever
// ended it, so status and lists tell the truth without asking the shim.
func (s *Server) watchContainer(podID, id string) {
	s.watchers.Add(1)
	go func() {
		defer s.watchers.Done()
		e, err := s.containers.WaitContainer(s.bg, podID, id)
		if s.bg.Err() != nil {
			return // ketchd is stopping; the next one watches again
		}
		s.containerExited(podID, id, e, err)
	}()
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
// The watchers start after New returns, a few at a time, so that ketchd
// serves at once: each asks its shim to report an exit, and a thousand
// shims woken together held a restarted ketchd's first answers up for
// seconds on two CPUs. A pod that died while ketchd was down is marked
// NOTREADY a moment later, when its watcher finds its shim gone.
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
	s.watchers.Add(1)
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
			if i < len(pods) {
				s.watchSandbox(pods[i].ID)
			} else {
				c := ctrs[i-len(pods)]
				s.watchContainer(c.SandboxID, c.ID)
			}
		}
	}()
	return nil
}

// watchBatch is how many watchers recover starts a millisecond.
const watchBatch = 4

// watchSandbox marks the pod NOTREADY once its PID 1 exits or its shim
// dies, whoever caused it, so lists never show a dead pod as ready.
func (s *Server) watchSandbox(id string) {
	s.watchers.Add(1)
	go func() {
		defer s.watchers.Done()
		if err := s.sandboxes.Wait(s.bg, id); err != nil {
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
