package cri

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

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
	// A stream waits here for its partner (by request ID: data, error);
	// one whose partner never comes goes with the connection.
	pairs := map[string][2]httpstream.Stream{}
	for {
		select {
		case <-conn.CloseChan():
			return
		case st := <-streams:
			id := st.Headers().Get(portforward.PortForwardRequestIDHeader)
			p := pairs[id]
			if st.Headers().Get(portforward.StreamType) == portforward.StreamTypeError {
				p[1] = st
			} else {
				p[0] = st
			}
			if p[0] == nil || p[1] == nil {
				pairs[id] = p
				continue
			}
			delete(pairs, id)
			go h.forwardPair(ctx, podID, p[0], p[1])
		}
	}
}

// forwardPair connects one data stream to its port in the pod; a failure
// is written to the error stream, where the client shows it.
func (h v5Handler) forwardPair(ctx context.Context, podID string, data, errStream httpstream.Stream) {
	defer data.Close()
	defer errStream.Close()
	port, err := strconv.ParseInt(data.Headers().Get(portforward.PortHeader), 10, 32)
	if err == nil {
		err = streamRuntime{h.s}.PortForward(ctx, podID, int32(port), data)
	}
	if err != nil {
		fmt.Fprintf(errStream, "port-forward to %s port %s: %v", podID, data.Headers().Get(portforward.PortHeader), err)
	}
}
