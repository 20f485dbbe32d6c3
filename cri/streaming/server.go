// Package streaming serves the exec, attach and port-forward sessions
// whose one-time URLs the Exec, Attach and PortForward RPCs hand out: SPDY
// and websocket up to v4 through k8s.io/cri-streaming, as kubelet and
// kubectl speak them, and in front of it the v5 websocket protocol and
// SPDY tunnelled through websocket (KEP-4006), which the library does not
// serve. What a session runs, it asks of a Runtime.
package streaming

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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	criserver "k8s.io/cri-streaming/pkg/streaming"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"ketch.dev/ketch/metrics"
	"ketch.dev/ketch/oci/shim"
)

// Runtime runs sessions in containers and pods (package cri implements
// it); Exec and Attach return the exit code of what ran.
type Runtime interface {
	Exec(ctx context.Context, containerID string, cmd []string, st shim.Streams) (int, error)
	Attach(ctx context.Context, containerID string, st shim.Streams) (int, error)
	PortForward(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error
}

// Server hands out session URLs and serves them.
type Server struct {
	rt       Runtime
	lib      criserver.Server // hands out URLs and serves v4 and SPDY sessions
	http     *http.Server
	sessions sessions // the requests behind the URLs, for the v5 handler
}

// Start serves sessions on addr (127.0.0.1:0 when empty). An address off
// loopback needs a TLS certificate and key: a session's URL is its only
// credential, and must not cross the network in clear.
func Start(addr, certFile, keyFile string, rt Runtime) (*Server, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var tlsCfg *tls.Config
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("streaming server TLS: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("streaming server: %w", err)
	}
	if ip, ok := l.Addr().(*net.TCPAddr); ok && !ip.IP.IsLoopback() && tlsCfg == nil {
		l.Close()
		return nil, fmt.Errorf("streaming server on %s: an address off loopback needs stream_tls_cert and stream_tls_key: %w", addr, errdefs.ErrInvalidArgument)
	}
	cfg := criserver.DefaultConfig
	cfg.Addr = l.Addr().String()
	// Known before the first URL is handed out, even with port 0.
	cfg.BaseURL = &url.URL{Scheme: "http", Host: cfg.Addr}
	if tlsCfg != nil {
		cfg.BaseURL.Scheme = "https"
		l = tls.NewListener(l, tlsCfg)
	}
	s := &Server{rt: rt}
	s.lib, err = criserver.NewServer(cfg, libRuntime{s})
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("streaming server: %w", err)
	}
	s.http = &http.Server{
		Handler: v5Handler{s: s, next: s.lib},
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
		if err := s.http.Serve(watchedListener{l}); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("streaming server", "err", err)
		}
	}()
	slog.Info("streaming server", "address", cfg.Addr)
	return s, nil
}

// Close ends every session and stops serving.
func (s *Server) Close() error { return s.http.Close() }

// GetExec hands out the URL of an exec session.
func (s *Server) GetExec(req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	resp, err := s.lib.GetExec(req)
	if err != nil {
		return nil, asInvalid(err)
	}
	s.sessions.add(resp.Url, pendingSession{exec: req})
	return resp, nil
}

// GetAttach hands out the URL of an attach session.
func (s *Server) GetAttach(req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	resp, err := s.lib.GetAttach(req)
	if err != nil {
		return nil, asInvalid(err)
	}
	s.sessions.add(resp.Url, pendingSession{attach: req})
	return resp, nil
}

// GetPortForward hands out the URL of a port-forward session.
func (s *Server) GetPortForward(req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	resp, err := s.lib.GetPortForward(req)
	if err != nil {
		return nil, asInvalid(err)
	}
	s.sessions.add(resp.Url, pendingSession{portForward: req})
	return resp, nil
}

// asInvalid: the streaming library refuses malformed requests (no output
// stream asked for, tty with stderr), and, with its own gRPC code, new
// URLs while 1000 are unused: that one a client may retry.
func asInvalid(err error) error {
	if status.Code(err) == codes.ResourceExhausted {
		return fmt.Errorf("%w: %w", errdefs.ErrResourceExhausted, err)
	}
	return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
}

// exec, attach and portForward run a session, whichever protocol brought
// it, counted among the sessions open while it runs.
func (s *Server) exec(ctx context.Context, id string, cmd []string, st shim.Streams) (int, error) {
	defer open("exec")()
	return s.rt.Exec(ctx, id, cmd, st)
}

func (s *Server) attach(ctx context.Context, id string, st shim.Streams) (int, error) {
	defer open("attach")()
	return s.rt.Attach(ctx, id, st)
}

func (s *Server) portForward(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error {
	defer open("port-forward")()
	return s.rt.PortForward(ctx, podID, port, stream)
}

// open counts an open session of kind until the returned func runs.
func open(kind string) func() {
	g := metrics.StreamSessions.WithLabelValues(kind)
	g.Inc()
	return g.Dec
}

// libRuntime runs the sessions the streaming library accepted.
type libRuntime struct{ s *Server }

func (r libRuntime) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	return exitError(r.s.exec(ctx, id, cmd, streams(in, out, errOut, tty, resize)))
}

func (r libRuntime) Attach(ctx context.Context, id string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	return exitError(r.s.attach(ctx, id, streams(in, out, errOut, tty, resize)))
}

func (r libRuntime) PortForward(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error {
	return r.s.portForward(ctx, podID, port, stream)
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
