package streaming

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	pfclient "k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/streaming/pkg/httpstream"
)

// The ways kubectl reaches a port-forward URL: SPDY, which the streaming
// library serves, and SPDY tunnelled through a websocket (its default
// since 1.31), which ketch serves.
var forwardProtocols = []struct {
	name   string
	tunnel bool
}{{"spdy", false}, {"websocket-tunnel", true}}

// dialPortForward connects to a port-forward URL as kubectl does.
func dialPortForward(t *testing.T, rawURL string, tunnel bool) httpstream.Connection {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	var d httpstream.Dialer
	if tunnel {
		if d, err = pfclient.NewSPDYOverWebsocketDialerForStreaming(u, &rest.Config{}); err != nil {
			t.Fatal(err)
		}
	} else {
		rt, up, err := spdy.RoundTripperFor(&rest.Config{})
		if err != nil {
			t.Fatal(err)
		}
		d = spdy.NewDialerForStreaming(up, &http.Client{Transport: rt}, http.MethodPost, u)
	}
	conn, proto, err := d.Dial(portforward.ProtocolV1Name)
	if err != nil {
		t.Fatal(err)
	}
	if proto != portforward.ProtocolV1Name {
		t.Errorf("negotiated %q, want %q", proto, portforward.ProtocolV1Name)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// forwardStreams opens the error and data streams of one forwarded
// connection, as kubectl does for each connection to its local port.
func forwardStreams(t *testing.T, conn httpstream.Connection, port string, requestID int) (data, errStream httpstream.Stream) {
	t.Helper()
	data, errStream, err := openForward(t, conn, port, requestID)
	if err != nil {
		t.Fatal(err)
	}
	return data, errStream
}

// openForward is forwardStreams for a connection the server may refuse
// at once: the error opening the data stream is returned (the streaming
// library resets a failed forward's streams, perhaps before the client
// has its data stream).
func openForward(t *testing.T, conn httpstream.Connection, port string, requestID int) (data, errStream httpstream.Stream, err error) {
	t.Helper()
	h := http.Header{}
	h.Set(portforward.StreamType, portforward.StreamTypeError)
	h.Set(portforward.PortHeader, port)
	h.Set(portforward.PortForwardRequestIDHeader, fmt.Sprint(requestID))
	errStream, err = conn.CreateStream(h)
	if err != nil {
		t.Fatal(err)
	}
	_ = errStream.Close() // the client only reads it
	h.Set(portforward.StreamType, portforward.StreamTypeData)
	data, err = conn.CreateStream(h)
	return data, errStream, err
}

// readAll reads r to its end, failing the test if that takes long.
func readAll(t *testing.T, r io.Reader) string {
	t.Helper()
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(r)
		ch <- result{b, err}
	}()
	select {
	case res := <-ch:
		return string(res.b)
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not end")
		return ""
	}
}

// TestPortForward: each forwarded connection reaches its port in the pod
// the URL was handed out for, several on one session; a failure reaches
// the client on the connection's error stream.
func TestPortForward(t *testing.T) {
	for _, p := range forwardProtocols {
		t.Run(p.name, func(t *testing.T) {
			var mu sync.Mutex
			var got []string
			s := startServer(t, &fakeRuntime{t: t, portForward: func(_ context.Context, podID string, port int32, stream io.ReadWriteCloser) error {
				mu.Lock()
				got = append(got, fmt.Sprintf("%s:%d", podID, port))
				mu.Unlock()
				if port == 81 {
					return errors.New("connection refused")
				}
				line, err := bufio.NewReader(stream).ReadString('\n')
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(stream, "pod %s port %d: %s", podID, port, line)
				return err
			}})
			resp, err := s.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: "p", Port: []int32{80, 443}})
			if err != nil {
				t.Fatal(err)
			}
			conn := dialPortForward(t, resp.Url, p.tunnel)
			// Two connections at once, opened interleaved.
			d1, e1 := forwardStreams(t, conn, "80", 1)
			d2, e2 := forwardStreams(t, conn, "443", 2)
			for _, c := range []struct {
				data, errs httpstream.Stream
				want       string
			}{{d2, e2, "pod p port 443: two\n"}, {d1, e1, "pod p port 80: one\n"}} {
				if _, err := fmt.Fprint(c.data, strings.SplitN(c.want, ": ", 2)[1]); err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, c.data); got != c.want {
					t.Errorf("data %q, want %q", got, c.want)
				}
				if got := readAll(t, c.errs); got != "" {
					t.Errorf("error stream %q, want none", got)
				}
			}
			// A port nothing listens on: the error stream says why.
			d3, e3, _ := openForward(t, conn, "81", 3)
			if msg := readAll(t, e3); !strings.Contains(msg, "connection refused") {
				t.Errorf("error stream %q, want the runtime's error", msg)
			}
			if d3 != nil {
				_ = d3.Close()
			}
			mu.Lock()
			defer mu.Unlock()
			slices.Sort(got)
			if strings.Join(got, " ") != "p:443 p:80 p:81" {
				t.Errorf("forwarded to %v, want p:443 p:80 p:81", got)
			}
		})
	}
}

// TestPortForwardBadPort: a tunnelled connection to a port that is no
// number is refused on its error stream, without reaching the runtime.
func TestPortForwardBadPort(t *testing.T) {
	s := startServer(t, &fakeRuntime{t: t}) // no portForward: a call fails the test
	resp, err := s.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: "p", Port: []int32{80}})
	if err != nil {
		t.Fatal(err)
	}
	conn := dialPortForward(t, resp.Url, true)
	data, errs := forwardStreams(t, conn, "http", 1)
	if msg := readAll(t, errs); !strings.Contains(msg, "port-forward to p port http") {
		t.Errorf("error stream %q, want the port refused", msg)
	}
	if got := readAll(t, data); got != "" {
		t.Errorf("data %q from a refused port", got)
	}
}

// TestPortForwardClientGone: once the client closes its connection, what
// runs for it is cancelled.
func TestPortForwardClientGone(t *testing.T) {
	for _, p := range forwardProtocols {
		t.Run(p.name, func(t *testing.T) {
			entered, ended := make(chan struct{}), make(chan struct{})
			s := startServer(t, &fakeRuntime{t: t, portForward: func(ctx context.Context, _ string, _ int32, stream io.ReadWriteCloser) error {
				close(entered)
				// As the pod's end of the forward does: until the session
				// is cancelled or the client's stream ends. The streaming
				// library gives SPDY forwards no context of the client;
				// ketch's tunnel must cancel its own.
				read := make(chan struct{})
				if !p.tunnel {
					go func() {
						_, _ = io.Copy(io.Discard, stream)
						close(read)
					}()
				}
				select {
				case <-ctx.Done():
				case <-read:
				}
				close(ended)
				return nil
			}})
			resp, err := s.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: "p", Port: []int32{80}})
			if err != nil {
				t.Fatal(err)
			}
			conn := dialPortForward(t, resp.Url, p.tunnel)
			forwardStreams(t, conn, "80", 1)
			select {
			case <-entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the connection never reached the runtime")
			}
			_ = conn.Close()
			select {
			case <-ended:
			case <-time.After(10 * time.Second):
				t.Fatal("the forward went on after its client left")
			}
		})
	}
}

// TestPortForwardNeedsTunnel: a v5 websocket exec protocol on a
// port-forward URL is refused with 400, and the URL is used up.
func TestPortForwardNeedsTunnel(t *testing.T) {
	s := startServer(t, &fakeRuntime{t: t})
	resp, err := s.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: "p", Port: []int32{80}})
	if err != nil {
		t.Fatal(err)
	}
	r := upgradeV5(t, resp.Url)
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "SPDY tunnelling") {
		t.Errorf("got %s %q, want 400 naming the tunnelling protocol", r.Status, body)
	}
	checkNotFound(t, resp.Url)
}
