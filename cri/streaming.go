package cri

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/metrics"
	"ketch.dev/ketch/oci/shim"
)

// startStreaming serves exec, attach and port-forward sessions (SPDY and
// websocket, through k8s.io/cri-streaming, as kubelet and kubectl speak
// them) on addr; the Exec, Attach and PortForward RPCs hand out one-time
// URLs to it.
func (s *Server) startStreaming(addr, certFile, keyFile string) error {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var tlsCfg *tls.Config
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("streaming server TLS: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("streaming server: %w", err)
	}
	// A session's URL is its only credential: off loopback, it must not
	// cross the network in clear.
	if ip, ok := l.Addr().(*net.TCPAddr); ok && !ip.IP.IsLoopback() && tlsCfg == nil {
		l.Close()
		return fmt.Errorf("streaming server on %s: an address off loopback needs stream_tls_cert and stream_tls_key: %w", addr, errdefs.ErrInvalidArgument)
	}
	cfg := streaming.DefaultConfig
	cfg.Addr = l.Addr().String()
	// Known before the first URL is handed out, even with port 0.
	cfg.BaseURL = &url.URL{Scheme: "http", Host: cfg.Addr}
	if tlsCfg != nil {
		cfg.BaseURL.Scheme = "https"
		l = tls.NewListener(l, tlsCfg)
	}
	srv, err := streaming.NewServer(cfg, streamRuntime{s})
	if err != nil {
		l.Close()
		return fmt.Errorf("streaming server: %w", err)
	}
	s.stream = srv
	s.streamHTTP = &http.Server{
		Handler: v5Handler{s: s, next: srv},
		// A client must send its request promptly, and an idle keep-alive
		// connection goes; a session, once upgraded, is no longer bound.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		// A session's context ends when its client's connection does: the
		// streaming library hijacks the connection, after which net/http
		// no longer notices a client that went away.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			w, ok := c.(*watchedConn)
			if !ok {
				return ctx
			}
			ctx, cancel := context.WithCancel(ctx)
			context.AfterFunc(w.gone, cancel)
			return ctx
		},
	}
	go func() {
		if err := s.streamHTTP.Serve(watchedListener{l}); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("streaming server", "err", err)
		}
	}()
	slog.Info("streaming server", "address", cfg.Addr)
	return nil
}

// Exec hands out the URL of an exec session in a running container.
func (s *Server) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	c, err := s.findContainer(req.GetContainerId())
	if err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	if c.State != store.ContainerRunning {
		return nil, fmt.Errorf("exec in %s: it is %s: %w", c.ID, c.State, errdefs.ErrFailedPrecondition)
	}
	if len(req.GetCmd()) == 0 {
		return nil, fmt.Errorf("exec in %s: empty command: %w", c.ID, errdefs.ErrInvalidArgument)
	}
	resp, err := s.stream.GetExec(req)
	if err != nil {
		return nil, asInvalid(err)
	}
	s.sessions.add(resp.Url, pendingSession{exec: req})
	return resp, nil
}

// Attach hands out the URL of an attach session to a running container.
func (s *Server) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	c, err := s.findContainer(req.GetContainerId())
	if err != nil {
		return nil, fmt.Errorf("attach: %w", err)
	}
	if c.State != store.ContainerRunning {
		return nil, fmt.Errorf("attach to %s: it is %s: %w", c.ID, c.State, errdefs.ErrFailedPrecondition)
	}
	resp, err := s.stream.GetAttach(req)
	if err != nil {
		return nil, asInvalid(err)
	}
	s.sessions.add(resp.Url, pendingSession{attach: req})
	return resp, nil
}

// PortForward hands out the URL of a port-forward session to a ready pod.
func (s *Server) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	sb, err := s.findSandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, fmt.Errorf("port-forward: %w", err)
	}
	if sb.State != store.SandboxReady {
		return nil, fmt.Errorf("port-forward to %s: the pod is not ready: %w", sb.ID, errdefs.ErrFailedPrecondition)
	}
	resp, err := s.stream.GetPortForward(req)
	if err != nil {
		return nil, asInvalid(err)
	}
	s.sessions.add(resp.Url, pendingSession{portForward: req})
	return resp, nil
}

// asInvalid: the streaming library refuses only malformed requests (no
// output stream asked for, tty with stderr).
func asInvalid(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
}

// session counts an open session of kind until the returned func runs.
func session(kind string) func() {
	g := metrics.StreamSessions.WithLabelValues(kind)
	g.Inc()
	return g.Dec
}

// streamRuntime runs the sessions the streaming server accepted.
type streamRuntime struct{ s *Server }

func (r streamRuntime) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	defer session("exec")()
	c, err := r.s.findContainer(id)
	if err != nil {
		return err
	}
	code, err := r.s.containers.Exec(ctx, c.SandboxID, c.ID, cmd, streams(in, out, errOut, tty, resize))
	return exitError(code, err)
}

func (r streamRuntime) Attach(ctx context.Context, id string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	defer session("attach")()
	c, err := r.s.findContainer(id)
	if err != nil {
		return err
	}
	code, err := r.s.containers.Attach(ctx, c.SandboxID, c.ID, streams(in, out, errOut, tty, resize))
	return exitError(code, err)
}

func (r streamRuntime) PortForward(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error {
	defer session("port-forward")()
	sb, err := r.s.findSandbox(podID)
	if err != nil {
		return err
	}
	spec, err := storedSpec(sb)
	if err != nil {
		return err
	}
	return r.s.sandboxes.PortForward(ctx, spec, port, stream)
}

// exitError is how the streaming library learns a command's exit code.
func exitError(code int, err error) error {
	if err != nil || code == 0 {
		return err
	}
	return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", code), Code: code}
}

func streams(in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) shim.Streams {
	st := shim.Streams{Stdin: in, Stdout: io.Discard, TTY: tty}
	if out != nil {
		st.Stdout = out
	}
	if errOut != nil {
		st.Stderr = errOut
	}
	if resize != nil {
		sizes := make(chan shim.Size)
		go func() {
			defer close(sizes)
			for sz := range resize {
				sizes <- shim.Size{Width: sz.Width, Height: sz.Height}
			}
		}()
		st.Resize = sizes
	}
	return st
}

// watchedListener hands out connections that tell when they end.
type watchedListener struct{ net.Listener }

func (l watchedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	gone, cancel := context.WithCancel(context.Background())
	return &watchedConn{Conn: c, gone: gone, cancel: cancel}, nil
}

// watchedConn's gone ends once a read fails (the client closed or reset
// the connection) or it is closed.
type watchedConn struct {
	net.Conn
	gone   context.Context
	cancel context.CancelFunc
}

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && !isTimeout(err) {
		c.cancel()
	}
	return n, err
}

func (c *watchedConn) Close() error {
	c.cancel()
	return c.Conn.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
