package streaming

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	utilexec "k8s.io/utils/exec"

	"ketch.dev/ketch/metrics"
	"ketch.dev/ketch/oci/shim"
)

// fakeRuntime runs sessions with the funcs a test gives it; a nil one
// fails the test if called.
type fakeRuntime struct {
	t           *testing.T
	exec        func(ctx context.Context, id string, cmd []string, st shim.Streams) (int, error)
	attach      func(ctx context.Context, id string, st shim.Streams) (int, error)
	portForward func(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error
}

func (r *fakeRuntime) Exec(ctx context.Context, id string, cmd []string, st shim.Streams) (int, error) {
	if r.exec == nil {
		r.t.Errorf("unexpected exec in %s: %v", id, cmd)
		return 0, errors.New("unexpected exec")
	}
	return r.exec(ctx, id, cmd, st)
}

func (r *fakeRuntime) Attach(ctx context.Context, id string, st shim.Streams) (int, error) {
	if r.attach == nil {
		r.t.Errorf("unexpected attach to %s", id)
		return 0, errors.New("unexpected attach")
	}
	return r.attach(ctx, id, st)
}

func (r *fakeRuntime) PortForward(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error {
	if r.portForward == nil {
		r.t.Errorf("unexpected port-forward to %s:%d", podID, port)
		return errors.New("unexpected port-forward")
	}
	return r.portForward(ctx, podID, port, stream)
}

// openSessions is how many sessions of kind the metric counts open.
func openSessions(t *testing.T, kind string) float64 {
	t.Helper()
	var m dto.Metric
	if err := metrics.StreamSessions.WithLabelValues(kind).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

func startServer(t *testing.T, rt Runtime) *Server {
	t.Helper()
	s, err := Start("", "", "", rt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// The protocols a client may speak to a session URL: SPDY and websocket
// v4, which the streaming library serves, and websocket v5, which ketch
// serves in front of it.
var protocols = []struct {
	name string
	ex   func(t *testing.T, rawURL string) remotecommand.Executor
}{
	{"spdy", func(t *testing.T, rawURL string) remotecommand.Executor {
		u, err := url.Parse(rawURL)
		if err != nil {
			t.Fatal(err)
		}
		ex, err := remotecommand.NewSPDYExecutor(&rest.Config{}, http.MethodPost, u)
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}},
	{"websocket-v4", func(t *testing.T, rawURL string) remotecommand.Executor {
		ex, err := remotecommand.NewWebSocketExecutorForProtocols(&rest.Config{}, http.MethodGet, rawURL, "v4.channel.k8s.io")
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}},
	{"websocket-v5", func(t *testing.T, rawURL string) remotecommand.Executor {
		ex, err := remotecommand.NewWebSocketExecutor(&rest.Config{}, http.MethodGet, rawURL)
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}},
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestExec: a session runs the command the URL was handed out for, in its
// container, with the client's stdin, stdout and stderr; its exit code or
// error reaches the client, over every protocol.
func TestExec(t *testing.T) {
	for _, p := range protocols {
		for _, tc := range []struct {
			desc    string
			code    int
			err     error
			wantErr func(error) bool
		}{
			{desc: "exit 0", wantErr: func(err error) bool { return err == nil }},
			{desc: "exit 3", code: 3, wantErr: func(err error) bool {
				var exit utilexec.ExitError
				return errors.As(err, &exit) && exit.ExitStatus() == 3
			}},
			{desc: "runtime error", err: fmt.Errorf("container c1: %w", errdefs.ErrNotFound), wantErr: func(err error) bool {
				var exit utilexec.ExitError
				return err != nil && !errors.As(err, &exit) && strings.Contains(err.Error(), "container c1")
			}},
		} {
			t.Run(p.name+"/"+tc.desc, func(t *testing.T) {
				ran := make(chan string, 1)
				s := startServer(t, &fakeRuntime{t: t, exec: func(_ context.Context, id string, cmd []string, st shim.Streams) (int, error) {
					ran <- id + ": " + strings.Join(cmd, " ")
					// A line: websocket v4 cannot tell the end of stdin.
					in, err := bufio.NewReader(st.Stdin).ReadString('\n')
					if err != nil {
						return 0, err
					}
					fmt.Fprintf(st.Stdout, "out:%s", in)
					fmt.Fprint(st.Stderr, "err:x")
					return tc.code, tc.err
				}})
				resp, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"sh", "-c", "cat"}, Stdin: true, Stdout: true, Stderr: true})
				if err != nil {
					t.Fatal(err)
				}
				var out, errOut bytes.Buffer
				err = p.ex(t, resp.Url).StreamWithContext(ctxT(t, 10*time.Second), remotecommand.StreamOptions{
					Stdin: strings.NewReader("hello\n"), Stdout: &out, Stderr: &errOut})
				if !tc.wantErr(err) {
					t.Errorf("session error: %v", err)
				}
				select {
				case got := <-ran:
					if got != "c1: sh -c cat" {
						t.Errorf("ran %q, want c1: sh -c cat", got)
					}
				default:
					t.Error("the session ran nothing")
				}
				if out.String() != "out:hello\n" || errOut.String() != "err:x" {
					t.Errorf("stdout %q, stderr %q; want %q, %q", out.String(), errOut.String(), "out:hello\n", "err:x")
				}
			})
		}
	}
}

// TestExecStdinEnd: the end of the client's stdin reaches the command, over
// the protocols that can tell it (SPDY, websocket v5), so `cat` ends.
func TestExecStdinEnd(t *testing.T) {
	for _, p := range protocols {
		if p.name == "websocket-v4" {
			continue
		}
		t.Run(p.name, func(t *testing.T) {
			s := startServer(t, &fakeRuntime{t: t, exec: func(_ context.Context, _ string, _ []string, st shim.Streams) (int, error) {
				n, err := io.Copy(st.Stdout, st.Stdin)
				fmt.Fprintf(st.Stdout, "|%d bytes", n)
				return 0, err
			}})
			resp, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"cat"}, Stdin: true, Stdout: true})
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err = p.ex(t, resp.Url).StreamWithContext(ctxT(t, 10*time.Second), remotecommand.StreamOptions{
				Stdin: strings.NewReader("a\nb\n"), Stdout: &out})
			if err != nil || out.String() != "a\nb\n|4 bytes" {
				t.Errorf("session: %v, output %q; want stdin back and its end", err, out.String())
			}
		})
	}
}

// sizeQueue hands out one terminal size, then ends.
type sizeQueue struct {
	once sync.Once
	size remotecommand.TerminalSize
}

func (q *sizeQueue) Next() *remotecommand.TerminalSize {
	var sz *remotecommand.TerminalSize
	q.once.Do(func() { sz = &q.size })
	return sz
}

// TestExecTTY: with a terminal, the client's window sizes reach the
// runtime, and output comes back on stdout alone.
func TestExecTTY(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			s := startServer(t, &fakeRuntime{t: t, exec: func(ctx context.Context, _ string, _ []string, st shim.Streams) (int, error) {
				if !st.TTY || st.Resize == nil {
					return 0, fmt.Errorf("streams %+v: want a terminal with resizes", st)
				}
				select {
				case sz := <-st.Resize:
					fmt.Fprintf(st.Stdout, "%dx%d", sz.Width, sz.Height)
				case <-ctx.Done():
					return 0, ctx.Err()
				}
				return 0, nil
			}})
			resp, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"sh"}, Stdout: true, Tty: true})
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err = p.ex(t, resp.Url).StreamWithContext(ctxT(t, 10*time.Second), remotecommand.StreamOptions{
				Stdout: &out, Tty: true, TerminalSizeQueue: &sizeQueue{size: remotecommand.TerminalSize{Width: 91, Height: 23}}})
			if err != nil || out.String() != "91x23" {
				t.Errorf("session: %v, output %q; want the size 91x23", err, out.String())
			}
		})
	}
}

// TestAttach: an attach session reaches the container the URL was handed
// out for with the client's streams, and ends when the client goes away,
// counted among the open sessions while it runs.
func TestAttach(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			entered, ended := make(chan struct{}), make(chan error, 1)
			s := startServer(t, &fakeRuntime{t: t, attach: func(ctx context.Context, id string, st shim.Streams) (int, error) {
				if id != "c2" || st.Stdin == nil || st.Stderr == nil {
					t.Errorf("attach to %q with %+v", id, st)
				}
				fmt.Fprint(st.Stdout, "ready\n")
				close(entered)
				<-ctx.Done() // the container runs on; the client leaves
				ended <- ctx.Err()
				return 0, nil
			}})
			open := openSessions(t, "attach")
			resp, err := s.GetAttach(&runtimeapi.AttachRequest{ContainerId: "c2", Stdin: true, Stdout: true, Stderr: true})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			stdin, stdinW := io.Pipe()
			defer stdinW.Close()
			done := make(chan error, 1)
			go func() {
				done <- p.ex(t, resp.Url).StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: io.Discard, Stderr: io.Discard})
			}()
			select {
			case <-entered:
			case err := <-done:
				t.Fatalf("the session ended before it reached the runtime: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("the session never reached the runtime")
			}
			if n := openSessions(t, "attach"); n != open+1 {
				t.Errorf("%v attach sessions open during one, want %v", n, open+1)
			}
			cancel()
			select {
			case err := <-ended:
				if err == nil {
					t.Error("the session's context ended without an error")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the session went on after its client left")
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the client did not return")
			}
			deadline := time.Now().Add(5 * time.Second)
			for openSessions(t, "attach") != open {
				if time.Now().After(deadline) {
					t.Fatalf("%v attach sessions open after it ended, want %v",
						openSessions(t, "attach"), open)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

// TestSessionURLGoodOnce: a URL serves one session, whichever protocol
// uses it; a second use, or one after the URL expired, is refused with 404.
func TestSessionURLGoodOnce(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			var runs atomic.Int32
			s := startServer(t, &fakeRuntime{t: t, exec: func(context.Context, string, []string, shim.Streams) (int, error) {
				runs.Add(1)
				return 0, nil
			}})
			resp, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"true"}, Stdout: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.ex(t, resp.Url).StreamWithContext(ctxT(t, 10*time.Second), remotecommand.StreamOptions{Stdout: io.Discard}); err != nil {
				t.Fatal(err)
			}
			if err := p.ex(t, resp.Url).StreamWithContext(ctxT(t, 10*time.Second), remotecommand.StreamOptions{Stdout: io.Discard}); err == nil {
				t.Error("a URL served a second session")
			}
			if n := runs.Load(); n != 1 {
				t.Errorf("%d sessions ran, want 1", n)
			}
			checkNotFound(t, resp.Url)
		})
	}
	t.Run("expired", func(t *testing.T) {
		s := startServer(t, &fakeRuntime{t: t})
		resp, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"true"}, Stdout: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: "p", Port: []int32{80}}); err != nil {
			t.Fatal(err)
		}
		s.sessions.mu.Lock()
		for tok, p := range s.sessions.pending {
			p.expires = time.Now().Add(-time.Second)
			s.sessions.pending[tok] = p
		}
		s.sessions.mu.Unlock()
		ex, err := remotecommand.NewWebSocketExecutor(&rest.Config{}, http.MethodGet, resp.Url)
		if err != nil {
			t.Fatal(err)
		}
		if err := ex.StreamWithContext(ctxT(t, 10*time.Second), remotecommand.StreamOptions{Stdout: io.Discard}); err == nil {
			t.Error("an expired URL served a session")
		}
		// The expired session nobody used is forgotten when the next one
		// is handed out.
		if _, err := s.GetAttach(&runtimeapi.AttachRequest{ContainerId: "c1", Stdout: true}); err != nil {
			t.Fatal(err)
		}
		s.sessions.mu.Lock()
		n := len(s.sessions.pending)
		s.sessions.mu.Unlock()
		if n != 1 {
			t.Errorf("%d sessions pending, want the new one alone", n)
		}
	})
}

func checkNotFound(t *testing.T, rawURL string) {
	t.Helper()
	r, err := http.Get(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	body, _ := io.ReadAll(r.Body)
	if r.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "unknown, used or expired") {
		t.Errorf("used URL: %s %q, want 404", r.Status, body)
	}
}

// TestRefusedRequests: a request no session could serve gets no URL, and
// the error says InvalidArgument.
func TestRefusedRequests(t *testing.T) {
	s := startServer(t, &fakeRuntime{t: t})
	for _, tc := range []struct {
		desc string
		call func() error
	}{
		{"exec: no stream", func() error {
			_, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"true"}})
			return err
		}},
		{"exec: tty and stderr", func() error {
			_, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"sh"}, Stdout: true, Stderr: true, Tty: true})
			return err
		}},
		{"exec: no container", func() error {
			_, err := s.GetExec(&runtimeapi.ExecRequest{Cmd: []string{"sh"}, Stdout: true})
			return err
		}},
		{"attach: no stream", func() error {
			_, err := s.GetAttach(&runtimeapi.AttachRequest{ContainerId: "c1"})
			return err
		}},
		{"attach: tty and stderr", func() error {
			_, err := s.GetAttach(&runtimeapi.AttachRequest{ContainerId: "c1", Stderr: true, Tty: true})
			return err
		}},
		{"port-forward: no pod", func() error {
			_, err := s.GetPortForward(&runtimeapi.PortForwardRequest{Port: []int32{80}})
			return err
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if err := tc.call(); !errdefs.IsInvalidArgument(err) {
				t.Errorf("got %v, want InvalidArgument", err)
			}
		})
	}
	s.sessions.mu.Lock()
	defer s.sessions.mu.Unlock()
	if len(s.sessions.pending) != 0 {
		t.Errorf("refused requests left %d sessions pending", len(s.sessions.pending))
	}
}

// TestStatusJSON: how a v5 session's end reads on its error channel, as
// kubectl decodes it.
func TestStatusJSON(t *testing.T) {
	for _, tc := range []struct {
		desc string
		code int
		err  error
		want string
	}{
		{"success", 0, nil, `{"metadata":{},"status":"Success"}`},
		{"exit code", 2, nil, `{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: 2",` +
			`"reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"2"}]}}`},
		{"not found", 0, fmt.Errorf("container c1: %w", errdefs.ErrNotFound), `{"metadata":{},"status":"Failure","message":"container c1: not found","reason":"NotFound"}`},
		{"other error", 0, errors.New("shim gone"), `{"metadata":{},"status":"Failure","message":"shim gone"}`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := string(statusJSON(tc.code, tc.err)); got != tc.want {
				t.Errorf("statusJSON(%d, %v) =\n %s\nwant\n %s", tc.code, tc.err, got, tc.want)
			}
		})
	}
}
