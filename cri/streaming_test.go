package cri

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/mock/gomock"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	utilexec "k8s.io/utils/exec"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/sandbox"
)

// streamingPod runs a pod with a running, a created and an exited
// container, and a stopped pod beside it.
func streamingPod(t *testing.T, d *testDeps) (pod, stopped string, ids map[string]string) {
	t.Helper()
	blockWait(d.sandboxes)
	pod = runTestPod(t, d, testPodConfig("web"))
	ids = map[string]string{}
	for name, state := range map[string]store.ContainerState{"running": store.ContainerRunning, "created": store.ContainerCreated,
		"exited": store.ContainerExited} {
		ids[name] = testID(pod + name)
		if err := d.store.CreateContainer(store.Container{ID: ids[name], SandboxID: pod, Name: name, Key: pod + "/" + name + "_0",
			State: state, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	stopped = runTestPod(t, d, testPodConfig("stopped"))
	d.sandboxes.EXPECT().Stop(gomock.Any(), gomock.Any()).Return(nil)
	if _, err := intercept(t, d.srv.StopPodSandbox, &runtimeapi.StopPodSandboxRequest{PodSandboxId: stopped}); err != nil {
		t.Fatal(err)
	}
	return pod, stopped, ids
}

// TestStreamingRefused: Exec, Attach and PortForward hand out no URL for
// what no session could serve, with the code kubelet acts on, and ask
// nothing of the pod's shim (no EXPECT).
func TestStreamingRefused(t *testing.T) {
	d := newTestDeps(t, Config{})
	_, stopped, ids := streamingPod(t, d)
	running := ids["running"]
	exec := func(r *runtimeapi.ExecRequest) func() error {
		return func() error { _, err := intercept(t, d.srv.Exec, r); return err }
	}
	attach := func(r *runtimeapi.AttachRequest) func() error {
		return func() error { _, err := intercept(t, d.srv.Attach, r); return err }
	}
	forward := func(r *runtimeapi.PortForwardRequest) func() error {
		return func() error { _, err := intercept(t, d.srv.PortForward, r); return err }
	}
	sh := []string{"sh"}
	for _, tc := range []struct {
		desc string
		call func() error
		want codes.Code
	}{
		{"exec: no container ID", exec(&runtimeapi.ExecRequest{Cmd: sh, Stdout: true}), codes.InvalidArgument},
		{"exec: unknown container", exec(&runtimeapi.ExecRequest{ContainerId: "ffff", Cmd: sh, Stdout: true}), codes.NotFound},
		{"exec: created container", exec(&runtimeapi.ExecRequest{ContainerId: ids["created"], Cmd: sh, Stdout: true}), codes.FailedPrecondition},
		{"exec: exited container", exec(&runtimeapi.ExecRequest{ContainerId: ids["exited"], Cmd: sh, Stdout: true}), codes.FailedPrecondition},
		{"exec: empty command", exec(&runtimeapi.ExecRequest{ContainerId: running, Stdout: true}), codes.InvalidArgument},
		{"exec: no stream", exec(&runtimeapi.ExecRequest{ContainerId: running, Cmd: sh}), codes.InvalidArgument},
		{"exec: tty and stderr", exec(&runtimeapi.ExecRequest{ContainerId: running, Cmd: sh, Tty: true, Stdout: true, Stderr: true}), codes.InvalidArgument},
		{"attach: no container ID", attach(&runtimeapi.AttachRequest{Stdout: true}), codes.InvalidArgument},
		{"attach: unknown container", attach(&runtimeapi.AttachRequest{ContainerId: "ffff", Stdout: true}), codes.NotFound},
		{"attach: created container", attach(&runtimeapi.AttachRequest{ContainerId: ids["created"], Stdout: true}), codes.FailedPrecondition},
		{"attach: exited container", attach(&runtimeapi.AttachRequest{ContainerId: ids["exited"], Stdout: true}), codes.FailedPrecondition},
		{"attach: no stream", attach(&runtimeapi.AttachRequest{ContainerId: running}), codes.InvalidArgument},
		{"port-forward: no pod ID", forward(&runtimeapi.PortForwardRequest{Port: []int32{80}}), codes.InvalidArgument},
		{"port-forward: unknown pod", forward(&runtimeapi.PortForwardRequest{PodSandboxId: "ffff", Port: []int32{80}}), codes.NotFound},
		{"port-forward: stopped pod", forward(&runtimeapi.PortForwardRequest{PodSandboxId: stopped, Port: []int32{80}}), codes.FailedPrecondition},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if err := tc.call(); status.Code(err) != tc.want {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// streamURL checks a session URL is the streaming server's, on loopback.
func streamURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.Hostname() != "127.0.0.1" || u.Port() == "" || u.Port() == "0" {
		t.Fatalf("session URL %q (%v): want http on 127.0.0.1 and the server's port", raw, err)
	}
	return u
}

func spdyExecutor(t *testing.T, u *url.URL) remotecommand.Executor {
	t.Helper()
	ex, err := remotecommand.NewSPDYExecutor(&rest.Config{}, http.MethodPost, u)
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

func streamCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestStreamingSessions: the URLs Exec, Attach and PortForward hand out
// (for an ID or a prefix of one) serve sessions in the container or pod
// asked for, through its shim, with the client's streams; the exit code
// of an exec reaches the client.
func TestStreamingSessions(t *testing.T) {
	d := newTestDeps(t, Config{})
	pod, _, ids := streamingPod(t, d)
	running := ids["running"]

	t.Run("exec", func(t *testing.T) {
		d.shimOf(pod).EXPECT().Exec(gomock.Any(), running, []string{"sh", "-c", "echo hi; exit 2"}, gomock.Any()).DoAndReturn(
			func(_ context.Context, _ string, _ []string, st shim.Streams) (int, error) {
				in, err := io.ReadAll(st.Stdin)
				fmt.Fprintf(st.Stdout, "hi %s", in)
				return 2, err
			})
		resp, err := intercept(t, d.srv.Exec, &runtimeapi.ExecRequest{ContainerId: running[:12], Cmd: []string{"sh", "-c", "echo hi; exit 2"},
			Stdin: true, Stdout: true})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		err = spdyExecutor(t, streamURL(t, resp.Url)).StreamWithContext(streamCtx(t), remotecommand.StreamOptions{
			Stdin: strings.NewReader("there"), Stdout: &out})
		var exit utilexec.ExitError
		if !errors.As(err, &exit) || exit.ExitStatus() != 2 || out.String() != "hi there" {
			t.Errorf("exec: %v, output %q; want exit status 2 and %q", err, out.String(), "hi there")
		}
	})
	t.Run("attach", func(t *testing.T) {
		d.shimOf(pod).EXPECT().Attach(gomock.Any(), running, gomock.Any()).DoAndReturn(
			func(_ context.Context, _ string, st shim.Streams) (int, error) {
				fmt.Fprint(st.Stdout, "attached")
				return 0, nil
			})
		resp, err := intercept(t, d.srv.Attach, &runtimeapi.AttachRequest{ContainerId: running, Stdout: true})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		err = spdyExecutor(t, streamURL(t, resp.Url)).StreamWithContext(streamCtx(t), remotecommand.StreamOptions{Stdout: &out})
		if err != nil || out.String() != "attached" {
			t.Errorf("attach: %v, output %q", err, out.String())
		}
	})
	t.Run("port-forward", func(t *testing.T) {
		d.sandboxes.EXPECT().PortForward(gomock.Any(), specOf(pod, "web"), int32(8080), gomock.Any()).DoAndReturn(
			func(_ context.Context, _ sandbox.Spec, _ int32, stream io.ReadWriteCloser) error {
				_, err := fmt.Fprint(stream, "pong")
				return err
			})
		resp, err := intercept(t, d.srv.PortForward, &runtimeapi.PortForwardRequest{PodSandboxId: pod[:12], Port: []int32{8080}})
		if err != nil {
			t.Fatal(err)
		}
		rt, up, err := spdy.RoundTripperFor(&rest.Config{})
		if err != nil {
			t.Fatal(err)
		}
		conn, _, err := spdy.NewDialerForStreaming(up, &http.Client{Transport: rt}, http.MethodPost, streamURL(t, resp.Url)).Dial(portforward.ProtocolV1Name)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		h := http.Header{}
		h.Set(portforward.StreamType, portforward.StreamTypeError)
		h.Set(portforward.PortHeader, "8080")
		h.Set(portforward.PortForwardRequestIDHeader, "0")
		errStream, err := conn.CreateStream(h)
		if err != nil {
			t.Fatal(err)
		}
		_ = errStream.Close()
		h.Set(portforward.StreamType, portforward.StreamTypeData)
		data, err := conn.CreateStream(h)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(data)
		if err != nil || string(got) != "pong" {
			t.Errorf("forwarded %q, %v; want pong", got, err)
		}
	})
	t.Run("a container removed after its URL was handed out", func(t *testing.T) {
		resp, err := intercept(t, d.srv.Exec, &runtimeapi.ExecRequest{ContainerId: running, Cmd: []string{"true"}, Stdout: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.store.DeleteContainer(running); err != nil {
			t.Fatal(err)
		}
		// No Exec EXPECT: the shim is not asked.
		err = spdyExecutor(t, streamURL(t, resp.Url)).StreamWithContext(streamCtx(t), remotecommand.StreamOptions{Stdout: io.Discard})
		if err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("exec in a removed container: %v, want not found", err)
		}
	})
}
