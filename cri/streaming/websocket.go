package streaming

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/streaming/pkg/httpstream/wsstream"

	"ketch.dev/ketch/oci/shim"
)

// The websocket remote-command protocol of KEP-4006
// (remotecommand.StreamProtocolV5Name), which kubectl and crictl speak by
// default and which can signal the end of stdin: k8s.io/cri-streaming
// serves websocket up to v4 only, so ketch serves v5 itself, in front of
// it; everything else goes to the library.

// sessionTTL is how long a handed-out URL stays good, as the streaming
// library's own cache keeps its tokens.
const sessionTTL = time.Minute

// pendingSession is an Exec or Attach request waiting for its client.
type pendingSession struct {
	exec        *runtimeapi.ExecRequest
	attach      *runtimeapi.AttachRequest
	portForward *runtimeapi.PortForwardRequest
	expires     time.Time
}

// sessions holds the requests behind handed-out URLs, by token, for the
// v5 handler; guarded by mu.
type sessions struct {
	mu      sync.Mutex
	pending map[string]pendingSession
}

func (ss *sessions) add(url string, p pendingSession) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.pending == nil {
		ss.pending = map[string]pendingSession{}
	}
	now := time.Now()
	for tok, old := range ss.pending {
		if now.After(old.expires) {
			delete(ss.pending, tok)
		}
	}
	p.expires = now.Add(sessionTTL)
	ss.pending[path.Base(url)] = p
}

// take returns the request for token once: a URL is good for one session.
func (ss *sessions) take(token string) (pendingSession, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	p, ok := ss.pending[token]
	delete(ss.pending, token)
	return p, ok && time.Now().Before(p.expires)
}

// v5Handler serves v5 websocket exec and attach sessions and websocket-
// tunnelled port-forwards, and hands every other request to next.
type v5Handler struct {
	s    *Server
	next http.Handler
}

// forget has the library drop the token of a URL served here: it keeps
// every token it handed out, up to 1000, until it is used or a minute has
// passed, and refuses new URLs past that, so a node serving many short v5
// sessions (kubectl's default) would soon hand out none. A request without
// an upgrade makes it consume the token and refuse the request, running
// nothing.
func (h v5Handler) forget(req *http.Request) {
	r, err := http.NewRequestWithContext(req.Context(), http.MethodGet, req.URL.Path, nil)
	if err == nil {
		h.next.ServeHTTP(discard{}, r)
	}
}

// discard is a ResponseWriter that keeps nothing.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

func (h v5Handler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	// Every URL is good once, whichever protocol uses it: the library keeps
	// tokens of its own, so one it serves is taken here too.
	p, ok := h.s.sessions.take(path.Base(req.URL.Path))
	if !ok {
		http.Error(w, "unknown, used or expired streaming session", http.StatusNotFound)
		return
	}
	v5, tunnel := wsstream.IsWebSocketRequestWithStreamCloseProtocol(req), wsstream.IsWebSocketRequestWithTunnelingProtocol(req)
	if !v5 && !tunnel {
		h.next.ServeHTTP(w, req)
		return
	}
	h.forget(req)
	if p.portForward != nil {
		if !tunnel {
			http.Error(w, "port-forward over websocket needs a SPDY tunnelling protocol", http.StatusBadRequest)
			return
		}
		h.servePortForwardTunnel(w, req, p.portForward.PodSandboxId)
		return
	}
	var ctrID string
	var cmd []string
	var stdin, stdout, stderr, tty bool
	switch {
	case p.exec != nil:
		r := p.exec
		ctrID, cmd, stdin, stdout, stderr, tty = r.ContainerId, r.Cmd, r.Stdin, r.Stdout, r.Stderr, r.Tty
	case p.attach != nil:
		r := p.attach
		ctrID, stdin, stdout, stderr, tty = r.ContainerId, r.Stdin, r.Stdout, r.Stderr, r.Tty
	}
	channel := func(on bool, t wsstream.ChannelType) wsstream.ChannelType {
		if on {
			return t
		}
		return wsstream.IgnoreChannel
	}
	channels := []wsstream.ChannelType{
		remotecommand.StreamStdIn:  channel(stdin, wsstream.ReadChannel),
		remotecommand.StreamStdOut: channel(stdout, wsstream.WriteChannel),
		remotecommand.StreamStdErr: channel(stderr && !tty, wsstream.WriteChannel),
		remotecommand.StreamErr:    wsstream.WriteChannel,
		remotecommand.StreamResize: channel(tty, wsstream.ReadChannel),
	}
	conn := wsstream.NewConn(map[string]wsstream.ChannelProtocolConfig{remotecommand.StreamProtocolV5Name: {Binary: true, Channels: channels}})
	_, streams, err := conn.Open(w, req)
	if err != nil {
		return // Open answered the client
	}
	defer conn.Close()
	// An empty message on the first writable channel tells the client the
	// session is up, as the v4 servers do.
	first := remotecommand.StreamErr
	if stdout {
		first = remotecommand.StreamStdOut
	} else if stderr && !tty {
		first = remotecommand.StreamStdErr
	}
	_, _ = streams[first].Write(nil)

	st := shim.Streams{Stdout: io.Discard, TTY: tty}
	if stdin {
		st.Stdin = streams[remotecommand.StreamStdIn]
	}
	if stdout {
		st.Stdout = streams[remotecommand.StreamStdOut]
	}
	if stderr && !tty {
		st.Stderr = streams[remotecommand.StreamStdErr]
	}
	if tty {
		st.Resize = decodeResizes(streams[remotecommand.StreamResize])
	}
	code, err := h.run(req.Context(), ctrID, cmd, p.exec != nil, st)
	_, _ = streams[remotecommand.StreamErr].Write(statusJSON(code, err))
}

func (h v5Handler) run(ctx context.Context, id string, cmd []string, exec bool, st shim.Streams) (int, error) {
	if exec {
		return h.s.exec(ctx, id, cmd, st)
	}
	return h.s.attach(ctx, id, st)
}

// decodeResizes turns the resize channel's JSON sizes into shim sizes.
func decodeResizes(r io.Reader) <-chan shim.Size {
	sizes := make(chan shim.Size)
	go func() {
		defer close(sizes)
		dec := json.NewDecoder(r)
		for {
			var sz struct{ Width, Height uint16 }
			if err := dec.Decode(&sz); err != nil {
				return
			}
			sizes <- shim.Size{Width: sz.Width, Height: sz.Height}
		}
	}()
	return sizes
}

// statusJSON is the metav1.Status the error channel ends a session with:
// success, a non-zero exit code (as a cause kubectl turns into its own
// exit code), or the error.
func statusJSON(code int, err error) []byte {
	type cause struct {
		Type    string `json:"reason"`
		Message string `json:"message"`
	}
	st := struct {
		Metadata struct{} `json:"metadata"`
		Status   string   `json:"status"`
		Message  string   `json:"message,omitempty"`
		Reason   string   `json:"reason,omitempty"`
		Details  *struct {
			Causes []cause `json:"causes"`
		} `json:"details,omitempty"`
	}{Status: "Success"}
	switch {
	case err != nil:
		st.Status, st.Message = "Failure", err.Error()
		if errdefs.IsNotFound(err) {
			st.Reason = "NotFound"
		}
	case code != 0:
		st.Status, st.Reason = "Failure", remotecommand.NonZeroExitCodeReason
		st.Message = fmt.Sprintf("command terminated with non-zero exit code: %d", code)
		st.Details = &struct {
			Causes []cause `json:"causes"`
		}{Causes: []cause{{Type: remotecommand.ExitCodeCauseType, Message: strconv.Itoa(code)}}}
	}
	b, _ := json.Marshal(st)
	return b
}
