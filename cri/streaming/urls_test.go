package streaming

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/oci/shim"
)

// urlsInFlight is how many URLs the streaming library keeps at once
// (k8s.io/cri-streaming's maxInFlight).
const urlsInFlight = 1000

// useV5 serves the session behind rawURL as a v5 websocket client that
// leaves at once does.
func useV5(t *testing.T, rawURL string) {
	t.Helper()
	r := upgradeV5(t, rawURL)
	r.Body.Close()
	if r.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("v5 session: %s", r.Status)
	}
}

// upgradeV5 asks for the session behind rawURL over websocket with the v5
// protocol (kubectl's) and returns the server's answer.
func upgradeV5(t *testing.T, rawURL string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Protocol", "v5.channel.k8s.io")
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestUsedURLsFreeTheirSlot: a URL a v5 session used is no longer in
// flight, so a node that serves many short kubectl execs (v5 is kubectl's
// default) keeps handing out URLs.
func TestUsedURLsFreeTheirSlot(t *testing.T) {
	var runs atomic.Int32
	s := startServer(t, &fakeRuntime{t: t, exec: func(context.Context, string, []string, shim.Streams) (int, error) {
		runs.Add(1)
		return 0, nil
	}})
	for i := range urlsInFlight + 1 {
		resp, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"true"}, Stdout: true})
		if err != nil {
			t.Fatalf("URL %d, after %d sessions ended: %v", i+1, runs.Load(), err)
		}
		useV5(t, resp.Url)
	}
	// Making the library drop a token runs nothing: no session ran twice.
	// (A session whose client hung up at once may not run at all.)
	if n := runs.Load(); n > urlsInFlight+1 {
		t.Errorf("%d execs ran for %d sessions", n, urlsInFlight+1)
	}
}

// TestTooManyURLsInFlight: past the URLs the streaming library keeps at
// once, a request is refused as a lack of resources, which a client may
// retry, not as a malformed request.
func TestTooManyURLsInFlight(t *testing.T) {
	s := startServer(t, &fakeRuntime{t: t})
	for i := range urlsInFlight {
		if _, err := s.GetAttach(&runtimeapi.AttachRequest{ContainerId: "c1", Stdout: true}); err != nil {
			t.Fatalf("URL %d: %v", i+1, err)
		}
	}
	_, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"true"}, Stdout: true})
	if !errdefs.IsResourceExhausted(err) || errdefs.IsInvalidArgument(err) {
		t.Errorf("URL %d: %v, want ResourceExhausted", urlsInFlight+1, err)
	}
}
