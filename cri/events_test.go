package cri

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"go.uber.org/mock/gomock"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/oci/shim"
)

// dialTestServer serves srv over an in-memory gRPC connection with ketch's
// interceptors, as ketchd wires it, and returns the client's connection.
func dialTestServer(t testing.TB, srv *Server) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	g := grpc.NewServer(ServerOptions()...)
	srv.Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// subscribers is how many GetContainerEvents streams the server feeds.
func subscribers(s *Server) int {
	s.events.mu.Lock()
	defer s.events.mu.Unlock()
	return len(s.events.subs)
}

// waitFor polls cond until it holds, failing the test after 5 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// eventClient is a GetContainerEvents stream as kubelet's evented PLEG
// reads it.
type eventClient struct {
	events chan *runtimeapi.ContainerEventResponse
	end    chan error // the stream's error, once it ends
	cancel context.CancelFunc
}

// subscribe opens a GetContainerEvents stream, and returns once the server
// feeds it.
func subscribe(t *testing.T, conn *grpc.ClientConn, srv *Server) *eventClient {
	t.Helper()
	before := subscribers(srv)
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	stream, err := runtimeapi.NewRuntimeServiceClient(conn).GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	c := &eventClient{events: make(chan *runtimeapi.ContainerEventResponse, 100), end: make(chan error, 1), cancel: cancel}
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				c.end <- err
				return
			}
			c.events <- ev
		}
	}()
	waitFor(t, "the event stream's subscription", func() bool { return subscribers(srv) > before })
	return c
}

// next is the next event, or a failed test after 5 seconds without one.
func (c *eventClient) next(t *testing.T) *runtimeapi.ContainerEventResponse {
	t.Helper()
	select {
	case ev := <-c.events:
		return ev
	case err := <-c.end:
		t.Fatalf("the event stream ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no event in 5 s")
	}
	return nil
}

// expect reads the next event and checks its type, whom it is about, and
// the state the statuses it carries give that pod or container.
func (c *eventClient) expect(t *testing.T, kind runtimeapi.ContainerEventType, id string, check func(*runtimeapi.ContainerEventResponse) error) *runtimeapi.ContainerEventResponse {
	t.Helper()
	ev := c.next(t)
	if ev.ContainerEventType != kind || ev.ContainerId != id {
		t.Fatalf("event %v about %.12s, want %v about %.12s", ev.ContainerEventType, ev.ContainerId, kind, id)
	}
	if ev.CreatedAt == 0 {
		t.Errorf("%v event without a time", kind)
	}
	if check != nil {
		if err := check(ev); err != nil {
			t.Errorf("%v event about %.12s: %v", kind, id, err)
		}
	}
	return ev
}

// podIs checks the event's pod status.
func podIs(pod string, state runtimeapi.PodSandboxState) func(*runtimeapi.ContainerEventResponse) error {
	return func(ev *runtimeapi.ContainerEventResponse) error {
		if p := ev.PodSandboxStatus; p.GetId() != pod || p.GetState() != state || p.GetMetadata().GetName() == "" {
			return fmt.Errorf("pod status %v, want %.12s %v", p, pod, state)
		}
		return nil
	}
}

// ctrIs checks the event's pod is ready and carries container id's status
// in state, with exit code code; absent state: without a status of id.
func ctrIs(pod, id string, state runtimeapi.ContainerState, code int32, present bool) func(*runtimeapi.ContainerEventResponse) error {
	return func(ev *runtimeapi.ContainerEventResponse) error {
		if ev.PodSandboxStatus.GetId() != pod {
			return fmt.Errorf("pod status of %.12s, want %.12s", ev.PodSandboxStatus.GetId(), pod)
		}
		i := slices.IndexFunc(ev.ContainersStatuses, func(s *runtimeapi.ContainerStatus) bool { return s.Id == id })
		switch {
		case !present && i >= 0:
			return fmt.Errorf("carries the status of %.12s: %v", id, ev.ContainersStatuses[i])
		case !present:
			return nil
		case i < 0:
			return fmt.Errorf("no status of %.12s among %v", id, ev.ContainersStatuses)
		case ev.ContainersStatuses[i].State != state || ev.ContainersStatuses[i].ExitCode != code:
			return fmt.Errorf("status %v exit %d, want %v exit %d", ev.ContainersStatuses[i].State, ev.ContainersStatuses[i].ExitCode, state, code)
		}
		return nil
	}
}

// TestContainerEventsLifecycle: every stream sees each step of a pod's and
// its container's life once, in order, each event with the statuses as
// they are after the step.
func TestContainerEventsLifecycle(t *testing.T) {
	d := newTestDeps(t, Config{})
	blockWait(d.sandboxes)
	conn := dialTestServer(t, d.srv)
	streams := []*eventClient{subscribe(t, conn, d.srv), subscribe(t, conn, d.srv)}

	pod := runTestPod(t, d, testPodConfig("web"))
	expectCreateUntil(t, d, pod, stepDone, nil)
	resp, err := intercept(t, d.srv.CreateContainer, createRequest(pod, "app"))
	if err != nil {
		t.Fatal(err)
	}
	ctr := resp.ContainerId
	exit := make(chan struct{})
	d.shimOf(pod).EXPECT().StartContainer(gomock.Any(), ctr).Return(shim.Started{Pid: 99, At: time.Now()}, nil)
	d.containers.EXPECT().WaitContainer(gomock.Any(), pod, ctr).DoAndReturn(func(context.Context, string, string) (shim.Exit, error) {
		<-exit
		return shim.Exit{Code: 3, At: time.Now()}, nil
	})
	if _, err := intercept(t, d.srv.StartContainer, &runtimeapi.StartContainerRequest{ContainerId: ctr}); err != nil {
		t.Fatal(err)
	}
	close(exit)
	waitFor(t, "the exit to be recorded", func() bool {
		return containerStatusOf(t, d, ctr).State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	d.containers.EXPECT().DeleteContainer(gomock.Any(), pod, ctr).Return(nil)
	d.images.EXPECT().Release(gomock.Any(), ctr, gomock.Any()).Return(nil)
	d.containers.EXPECT().RemoveContainerDir(ctr).Return(nil)
	if _, err := intercept(t, d.srv.RemoveContainer, &runtimeapi.RemoveContainerRequest{ContainerId: ctr}); err != nil {
		t.Fatal(err)
	}
	d.sandboxes.EXPECT().Stop(gomock.Any(), gomock.Any()).Return(nil)
	if _, err := intercept(t, d.srv.StopPodSandbox, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	d.sandboxes.EXPECT().Remove(gomock.Any(), gomock.Any()).Return(nil)
	if _, err := intercept(t, d.srv.RemovePodSandbox, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	// A mark: nothing else came between.
	next := runTestPod(t, d, testPodConfig("next"))

	const (
		created = runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT
		started = runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT
		stopped = runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT
		deleted = runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT
		ready   = runtimeapi.PodSandboxState_SANDBOX_READY
	)
	for i, c := range streams {
		t.Run(fmt.Sprint("stream ", i), func(t *testing.T) {
			var last int64
			for _, step := range []struct {
				kind  runtimeapi.ContainerEventType
				id    string
				check func(*runtimeapi.ContainerEventResponse) error
			}{
				{created, pod, podIs(pod, ready)},
				{started, pod, podIs(pod, ready)},
				{created, ctr, ctrIs(pod, ctr, runtimeapi.ContainerState_CONTAINER_CREATED, 0, true)},
				{started, ctr, ctrIs(pod, ctr, runtimeapi.ContainerState_CONTAINER_RUNNING, 0, true)},
				{stopped, ctr, ctrIs(pod, ctr, runtimeapi.ContainerState_CONTAINER_EXITED, 3, true)},
				{deleted, ctr, ctrIs(pod, ctr, 0, 0, false)},
				{stopped, pod, podIs(pod, runtimeapi.PodSandboxState_SANDBOX_NOTREADY)},
				// The pod's last status: it can no longer be looked up.
				{deleted, pod, podIs(pod, runtimeapi.PodSandboxState_SANDBOX_NOTREADY)},
				{created, next, podIs(next, ready)},
			} {
				ev := c.expect(t, step.kind, step.id, step.check)
				if ev.CreatedAt < last {
					t.Errorf("%v event about %.12s is older than the one before", step.kind, step.id)
				}
				last = ev.CreatedAt
			}
		})
	}
}

// TestContainerEventsOnce: an exit, a failed start, a pod's death each
// reach the streams once, though several parties may record them.
func TestContainerEventsOnce(t *testing.T) {
	const stopped = runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT
	t.Run("StopContainer and the watcher both see the exit", func(t *testing.T) {
		d := newTestDeps(t, Config{})
		pod, id := createdContainer(t, d)
		killed := make(chan struct{})
		d.shimOf(pod).EXPECT().StartContainer(gomock.Any(), id).Return(shim.Started{Pid: 99, At: time.Now()}, nil)
		d.containers.EXPECT().WaitContainer(gomock.Any(), pod, id).DoAndReturn(func(ctx context.Context, _, _ string) (shim.Exit, error) {
			select {
			case <-killed:
				return shim.Exit{Code: 137, Signal: syscall.SIGKILL, At: time.Now()}, nil
			case <-ctx.Done():
				return shim.Exit{}, ctx.Err()
			}
		}).Times(2) // the watcher's, and StopContainer's
		d.containers.EXPECT().SignalContainer(gomock.Any(), pod, id, syscall.SIGKILL, true).DoAndReturn(
			func(context.Context, string, string, syscall.Signal, bool) error { close(killed); return nil })
		if _, err := intercept(t, d.srv.StartContainer, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
		c := subscribe(t, dialTestServer(t, d.srv), d.srv)
		if _, err := intercept(t, d.srv.StopContainer, &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
		c.expect(t, stopped, id, ctrIs(pod, id, runtimeapi.ContainerState_CONTAINER_EXITED, 137, true))
		// Both have recorded it once StopContainer's wait and the watcher
		// are done: Close waits for the watcher.
		d.srv.Close()
		next := runTestPod(t, d, testPodConfig("next"))
		c.expect(t, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, next, nil)
	})
	t.Run("a failed start", func(t *testing.T) {
		d := newTestDeps(t, Config{})
		pod, id := createdContainer(t, d)
		c := subscribe(t, dialTestServer(t, d.srv), d.srv)
		d.shimOf(pod).EXPECT().StartContainer(gomock.Any(), id).Return(shim.Started{}, errors.New("exec: no such file"))
		d.shimOf(pod).EXPECT().State(gomock.Any(), id).Return(shim.State{ID: id, Status: shim.StatusStopped}, nil)
		if _, err := intercept(t, d.srv.StartContainer, &runtimeapi.StartContainerRequest{ContainerId: id}); err == nil {
			t.Fatal("a failed start succeeded")
		}
		// A second start is refused before the shim: no event.
		if _, err := intercept(t, d.srv.StartContainer, &runtimeapi.StartContainerRequest{ContainerId: id}); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("start of an exited container: %v, want FailedPrecondition", err)
		}
		ev := c.expect(t, stopped, id, ctrIs(pod, id, runtimeapi.ContainerState_CONTAINER_EXITED, 128, true))
		if i := slices.IndexFunc(ev.ContainersStatuses, func(s *runtimeapi.ContainerStatus) bool { return s.Id == id }); ev.ContainersStatuses[i].Reason != reasonStartError {
			t.Errorf("reason %q, want %s", ev.ContainersStatuses[i].Reason, reasonStartError)
		}
		next := runTestPod(t, d, testPodConfig("next"))
		c.expect(t, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, next, nil)
	})
	t.Run("the pod's PID 1 dies, then kubelet stops it", func(t *testing.T) {
		d := newTestDeps(t, Config{})
		died := make(chan struct{})
		waitUntil(d.sandboxes, died)
		pod := runTestPod(t, d, testPodConfig("web"))
		c := subscribe(t, dialTestServer(t, d.srv), d.srv)
		close(died)
		c.expect(t, stopped, pod, podIs(pod, runtimeapi.PodSandboxState_SANDBOX_NOTREADY))
		d.sandboxes.EXPECT().Stop(gomock.Any(), gomock.Any()).Return(nil)
		if _, err := intercept(t, d.srv.StopPodSandbox, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
			t.Fatal(err)
		}
		next := runTestPod(t, d, testPodConfig("next"))
		c.expect(t, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, next, nil)
	})
}

// TestContainerEventsHideCreating: an event carries the statuses of the
// pod's containers as ListContainers would list them: not one still being
// created.
func TestContainerEventsHideCreating(t *testing.T) {
	d := newTestDeps(t, Config{})
	pod, other := createdContainer(t, d)
	c := subscribe(t, dialTestServer(t, d.srv), d.srv)
	d.shimOf(pod).EXPECT().StartContainer(gomock.Any(), other).Return(shim.Started{Pid: 99, At: time.Now()}, nil)
	d.containers.EXPECT().WaitContainer(gomock.Any(), pod, other).DoAndReturn(func(ctx context.Context, _, _ string) (shim.Exit, error) {
		<-ctx.Done()
		return shim.Exit{}, ctx.Err()
	})
	// While "next" is in its shim's hands, "app" starts.
	expectCreateWith(t, d, pod, stepDone, nil, func() {
		if _, err := intercept(t, d.srv.StartContainer, &runtimeapi.StartContainerRequest{ContainerId: other}); err != nil {
			t.Error(err)
		}
	})
	resp, err := intercept(t, d.srv.CreateContainer, createRequest(pod, "next"))
	if err != nil {
		t.Fatal(err)
	}
	ev := c.expect(t, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, other,
		ctrIs(pod, other, runtimeapi.ContainerState_CONTAINER_RUNNING, 0, true))
	if err := ctrIs(pod, resp.ContainerId, 0, 0, false)(ev); err != nil {
		t.Errorf("the event of a start during a create: %v", err)
	}
	c.expect(t, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, resp.ContainerId,
		ctrIs(pod, resp.ContainerId, runtimeapi.ContainerState_CONTAINER_CREATED, 0, true))
}

// blockedStream is a GetContainerEvents stream whose client reads only
// once let: Send holds until release closes.
type blockedStream struct {
	grpc.ServerStream
	ctx     context.Context
	sending chan struct{} // one value each time Send begins
	release chan struct{}
	sent    []*runtimeapi.ContainerEventResponse
}

func (s *blockedStream) Context() context.Context     { return s.ctx }
func (s *blockedStream) SetHeader(metadata.MD) error  { return nil }
func (s *blockedStream) SendHeader(metadata.MD) error { return nil }
func (s *blockedStream) SetTrailer(metadata.MD)       {}
func (s *blockedStream) Send(ev *runtimeapi.ContainerEventResponse) error {
	select {
	case s.sending <- struct{}{}:
	default:
	}
	<-s.release
	s.sent = append(s.sent, ev)
	return nil
}

// serveEvents runs GetContainerEvents on stream through the stream
// interceptor, as the gRPC server does, and returns its end.
func serveEvents(srv *Server, stream *blockedStream) <-chan error {
	end := make(chan error, 1)
	go func() {
		end <- StreamInterceptor(srv, stream, &grpc.StreamServerInfo{FullMethod: "/runtime.v1.RuntimeService/GetContainerEvents", IsServerStream: true},
			func(srv any, ss grpc.ServerStream) error {
				return srv.(*Server).GetContainerEvents(&runtimeapi.GetEventsRequest{},
					ss.(grpc.ServerStreamingServer[runtimeapi.ContainerEventResponse]))
			})
	}()
	return end
}

// TestContainerEventsSlowClient: a client that falls eventBuffer events
// behind gets every event up to the gap, then its stream ends with
// ResourceExhausted (kubelet relists), and the runtime never waits for it.
func TestContainerEventsSlowClient(t *testing.T) {
	d := newTestDeps(t, Config{})
	stream := &blockedStream{ctx: t.Context(), sending: make(chan struct{}, 1), release: make(chan struct{})}
	end := serveEvents(d.srv, stream)
	waitFor(t, "the subscription", func() bool { return subscribers(d.srv) == 1 })
	publish := func(n int) {
		d.srv.events.publish(&runtimeapi.ContainerEventResponse{ContainerId: fmt.Sprint(n),
			ContainerEventType: runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, CreatedAt: int64(n)})
	}
	publish(0)
	<-stream.sending // event 0 is on its way; the client does not read it
	for n := 1; n <= eventBuffer+1; n++ {
		publish(n) // returns at once: the last one finds the buffer full
	}
	if subscribers(d.srv) != 0 {
		t.Error("a client past the buffer is still fed")
	}
	close(stream.release)
	select {
	case err := <-end:
		if status.Code(err) != codes.ResourceExhausted {
			t.Errorf("the stream ended with %v, want ResourceExhausted", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream of a client past the buffer did not end")
	}
	if len(stream.sent) != eventBuffer+1 {
		t.Fatalf("%d events sent, want %d: those before the gap", len(stream.sent), eventBuffer+1)
	}
	for i, ev := range stream.sent {
		if ev.ContainerId != fmt.Sprint(i) {
			t.Fatalf("event %d is %s: out of order", i, ev.ContainerId)
		}
	}
}

// TestContainerEventsClientLeaves: a client that goes away ends its
// stream without an error, and is fed no more.
func TestContainerEventsClientLeaves(t *testing.T) {
	d := newTestDeps(t, Config{})
	blockWait(d.sandboxes)
	conn := dialTestServer(t, d.srv)
	stay, leave := subscribe(t, conn, d.srv), subscribe(t, conn, d.srv)
	leave.cancel()
	if err := <-leave.end; status.Code(err) != codes.Canceled {
		t.Errorf("the client's end: %v, want Canceled", err)
	}
	waitFor(t, "the stream to be dropped", func() bool { return subscribers(d.srv) == 1 })
	pod := runTestPod(t, d, testPodConfig("web"))
	stay.expect(t, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, pod, nil)

	ctx, cancel := context.WithCancel(t.Context())
	stream := &blockedStream{ctx: ctx, sending: make(chan struct{}, 1), release: make(chan struct{})}
	end := serveEvents(d.srv, stream)
	waitFor(t, "the subscription", func() bool { return subscribers(d.srv) == 2 })
	cancel()
	select {
	case err := <-end:
		if err != nil {
			t.Errorf("a stream whose client left ended with %v, want no error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream of a client that left did not end")
	}
	if n := subscribers(d.srv); n != 1 {
		t.Errorf("%d streams fed, want 1", n)
	}
}
