package streaming

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/websocket"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"
)

// servePortForwardTunnel serves a port-forward whose SPDY connection is
// tunnelled through a websocket (KEP-4006: kubectl's default), which the
// streaming library does not serve: each binary message carries SPDY
// bytes, and the port-forward streams inside are the usual ones.
func (h v5Handler) servePortForwardTunnel(w http.ResponseWriter, req *http.Request, podID string) {
	websocket.Server{
		Handshake: func(cfg *websocket.Config, _ *http.Request) error {
			for _, p := range cfg.Protocol {
				if strings.HasPrefix(p, "SPDY/3.1+") && strings.HasSuffix(p, ".k8s.io") {
					cfg.Protocol = []string{p}
					return nil
				}
			}
			return fmt.Errorf("no SPDY tunnelling protocol in %v", cfg.Protocol)
		},
		Handler: func(ws *websocket.Conn) {
			ws.PayloadType = websocket.BinaryFrame
			h.forwardOverSPDY(req.Context(), ws, podID)
		},
	}.ServeHTTP(w, req)
}

func (h v5Handler) forwardOverSPDY(ctx context.Context, ws *websocket.Conn, podID string) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	streams := make(chan httpstream.Stream)
	conn, err := spdy.NewServerConnection(ws, func(st httpstream.Stream, _ <-chan struct{}) error {
		if st.Headers().Get(portforward.PortForwardRequestIDHeader) == "" {
			return fmt.Errorf("port-forward stream without %s", portforward.PortForwardRequestIDHeader)
		}
		select {
		case streams <- st:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	if err != nil {
		slog.Warn("port-forward tunnel", "pod", podID, "err", err)
		return
	}
	defer conn.Close()
	// A stream waits here for its partner (by request ID: data, error), as
	// long as the streaming library lets one (streamCreationTimeout), and
	// only so many wait at once: a client cannot pile up half pairs.
	type pending struct {
		pair  [2]httpstream.Stream
		since time.Time
	}
	pairs := map[string]*pending{}
	expire := time.NewTicker(pairTimeout / 4)
	defer expire.Stop()
	for {
		select {
		case <-conn.CloseChan():
			return
		case now := <-expire.C:
			for id, p := range pairs {
				if now.Sub(p.since) > pairTimeout {
					delete(pairs, id)
					for _, st := range p.pair {
						if st != nil {
							_ = st.Reset()
						}
					}
				}
			}
		case st := <-streams:
			id := st.Headers().Get(portforward.PortForwardRequestIDHeader)
			p := pairs[id]
			if p == nil {
				if len(pairs) >= maxUnpaired {
					_ = st.Reset()
					continue
				}
				p = &pending{since: time.Now()}
				pairs[id] = p
			}
			if st.Headers().Get(portforward.StreamType) == portforward.StreamTypeError {
				p.pair[1] = st
			} else {
				p.pair[0] = st
			}
			if p.pair[0] == nil || p.pair[1] == nil {
				continue
			}
			delete(pairs, id)
			go h.forwardPair(ctx, podID, p.pair[0], p.pair[1])
		}
	}
}

// A port-forward stream waits this long for its partner, and this many may
// wait on one connection.
const (
	pairTimeout = 30 * time.Second
	maxUnpaired = 64
)

// forwardPair connects one data stream to its port in the pod; a failure
// is written to the error stream, where the client shows it.
func (h v5Handler) forwardPair(ctx context.Context, podID string, data, errStream httpstream.Stream) {
	defer data.Close()
	defer errStream.Close()
	port, err := strconv.ParseInt(data.Headers().Get(portforward.PortHeader), 10, 32)
	if err == nil {
		err = h.s.portForward(ctx, podID, int32(port), data)
	}
	if err != nil {
		fmt.Fprintf(errStream, "port-forward to %s port %s: %v", podID, data.Headers().Get(portforward.PortHeader), err)
	}
}
