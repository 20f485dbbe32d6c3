package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// fakeStates fakes the store's states and the pods' ketch-init counts.
type fakeStates struct {
	pods, ctrs        map[string]int
	err               error
	reaped, forwarded uint64
	initErr           error
}

func (f fakeStates) CountStates() (map[string]int, map[string]int, error) {
	return f.pods, f.ctrs, f.err
}

func (f fakeStates) InitCounts() (uint64, uint64, error) { return f.reaped, f.forwarded, f.initErr }

func get(t *testing.T, s fakeStates) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := Serve(ctx, "127.0.0.1:0", s, s)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s\n%s", resp.Status, b)
	}
	return string(b)
}

func TestServe(t *testing.T) {
	for _, tc := range []struct {
		desc      string
		states    fakeStates
		want, not []string
	}{
		{desc: "counts by state", states: fakeStates{pods: map[string]int{"ready": 2}, ctrs: map[string]int{"running": 3, "exited": 1}},
			want: []string{`ketch_pods{state="ready"} 2`, `ketch_containers{state="running"} 3`, `ketch_containers{state="exited"} 1`, "go_goroutines", "process_open_fds"}},
		{desc: "a store that cannot count leaves the rest served", states: fakeStates{err: errors.New("closed")},
			want: []string{"go_goroutines"}, not: []string{"ketch_pods{"}},
		{desc: "ketch-init counts", states: fakeStates{reaped: 7, forwarded: 2},
			want: []string{"ketch_init_zombies_reaped_total 7", "ketch_init_signals_forwarded_total 2"}},
		{desc: "counts that cannot be read leave the rest served", states: fakeStates{initErr: errors.New("gone"), pods: map[string]int{"ready": 1}},
			want: []string{`ketch_pods{state="ready"} 1`}, not: []string{"ketch_init_zombies_reaped_total"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			text := get(t, tc.states)
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("no %q in /metrics", w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(text, n) {
					t.Errorf("%q in /metrics", n)
				}
			}
		})
	}
}

func TestServeTakenAddress(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := Serve(ctx, "127.0.0.1:0", fakeStates{}, fakeStates{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Serve(ctx, addr.String(), fakeStates{}, fakeStates{}); err == nil {
		t.Error("a second server on a taken address")
	}
}
