package cri

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
)

// eventBuffer is how far a GetContainerEvents stream may fall behind
// before it is cut off: a stuck client must never hold the runtime up.
const eventBuffer = 1024

// events fans container and pod events out to the GetContainerEvents
// streams (kubelet's evented PLEG). Each event is published after the state
// it describes is in the store, once, and every stream sees them in the
// order they were published.
type events struct {
	mu   sync.Mutex
	subs map[chan *runtimeapi.ContainerEventResponse]bool // guarded by mu
}

func (e *events) subscribe() (<-chan *runtimeapi.ContainerEventResponse, func()) {
	ch := make(chan *runtimeapi.ContainerEventResponse, eventBuffer)
	e.mu.Lock()
	if e.subs == nil {
		e.subs = map[chan *runtimeapi.ContainerEventResponse]bool{}
	}
	e.subs[ch] = true
	e.mu.Unlock()
	return ch, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.subs[ch] {
			delete(e.subs, ch)
			close(ch)
		}
	}
}

// listening reports whether any stream is open, so an event nobody would
// see costs no status lookups.
func (e *events) listening() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.subs) > 0
}

func (e *events) publish(ev *runtimeapi.ContainerEventResponse) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for ch := range e.subs {
		select {
		case ch <- ev:
		default:
			// Closed without the event: the stream ends, and kubelet
			// relists rather than act on a gap.
			delete(e.subs, ch)
			close(ch)
		}
	}
}

// GetContainerEvents streams container and pod lifecycle events until the
// client goes away or falls eventBuffer events behind.
func (s *Server) GetContainerEvents(req *runtimeapi.GetEventsRequest, stream grpc.ServerStreamingServer[runtimeapi.ContainerEventResponse]) error {
	ch, cancel := s.events.subscribe()
	defer cancel()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case ev, ok := <-ch:
			if !ok {
				return fmt.Errorf("event stream fell %d events behind: %w", eventBuffer, errdefs.ErrResourceExhausted)
			}
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}

// eventTypes are the store's changes as kubelet's container events.
var eventTypes = map[store.ChangeKind]runtimeapi.ContainerEventType{
	store.Created: runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT,
	store.Started: runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT,
	store.Stopped: runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT,
	store.Deleted: runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT,
}

// changed is the store's Notify function: it publishes each transition as
// an event about the container (the pod's own ID for pod events), with
// the statuses as they are now in the store, or for a deleted pod, as its
// last record had them.
func (s *Server) changed(c store.Change) {
	if c.Kind == store.Deleted {
		s.listItems.forget(c.ID)
	}
	if !s.events.listening() {
		return
	}
	ev := &runtimeapi.ContainerEventResponse{ContainerId: c.ID, ContainerEventType: eventTypes[c.Kind], CreatedAt: time.Now().UnixNano()}
	if c.Pod != nil {
		ev.PodSandboxStatus, _, _ = sandboxStatus(*c.Pod)
		s.events.publish(ev)
		return
	}
	podID := c.PodID
	if st, err := s.storedPodStatus(podID); err == nil {
		ev.PodSandboxStatus = st
	}
	if ctrs, err := s.store.ListContainers(store.ContainerFilter{SandboxID: podID}); err == nil {
		for _, c := range ctrs {
			if c.State == store.ContainerCreating {
				continue // not listed either
			}
			// The status needs the config, which lists leave out.
			if full, err := s.store.GetContainer(c.ID); err != nil {
				slog.Debug("event statuses", "pod", podID, "container", c.ID, "err", err)
			} else if st, _, err := containerStatus(full); err == nil {
				ev.ContainersStatuses = append(ev.ContainersStatuses, st)
			}
		}
	} else {
		slog.Debug("event statuses", "pod", podID, "err", err)
	}
	s.events.publish(ev)
}
