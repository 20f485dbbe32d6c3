package server

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPump has the shim's pump read several streams at once: each gets
// all its output, in order, and ends once, whether its writer closed it or
// it was cut with the writer still open.
func TestPump(t *testing.T) {
	p, err := output()
	if err != nil {
		t.Fatal(err)
	}
	type stream struct {
		w    int
		mu   sync.Mutex
		got  bytes.Buffer
		ends int
		done chan struct{}
		s    *pumped
	}
	want := strings.Repeat("0123456789abcdef", 8<<10) // 128 KiB: several reads
	var streams []*stream
	for range 5 {
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		if err := unix.SetNonblock(fds[0], true); err != nil {
			t.Fatal(err)
		}
		st := &stream{w: fds[1], done: make(chan struct{})}
		st.s, err = p.add(fds[0], func(b []byte) {
			st.mu.Lock()
			st.got.Write(b)
			st.mu.Unlock()
		}, func() {
			st.mu.Lock()
			st.ends++
			st.mu.Unlock()
			close(st.done)
		})
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	// All but the last write everything and close; the last is cut after
	// writing a little, its writer still open.
	var writers sync.WaitGroup
	for _, st := range streams[:len(streams)-1] {
		writers.Go(func() {
			for b := []byte(want); len(b) > 0; {
				n, err := unix.Write(st.w, b)
				if err != nil {
					t.Error(err)
					break
				}
				b = b[n:]
			}
			unix.Close(st.w)
		})
	}
	writers.Wait()
	last := streams[len(streams)-1]
	defer unix.Close(last.w)
	if _, err := unix.Write(last.w, []byte("partial")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { last.mu.Lock(); defer last.mu.Unlock(); return last.got.Len() == len("partial") })
	p.cut(last.s)
	p.cut(last.s) // again: nothing more

	for i, st := range streams {
		select {
		case <-st.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("stream %d never ended", i)
		}
		st.mu.Lock()
		if w := want; i == len(streams)-1 {
			w = "partial"
			if st.got.String() != w {
				t.Errorf("stream %d read %d bytes, want %q", i, st.got.Len(), w)
			}
		} else if st.got.String() != w {
			t.Errorf("stream %d read %d bytes, not the %d written in order", i, st.got.Len(), len(w))
		}
		if st.ends != 1 {
			t.Errorf("stream %d ended %d times", i, st.ends)
		}
		st.mu.Unlock()
	}
	// A cut stream's descriptor is closed: its writer sees the reader gone.
	if _, err := unix.Write(last.w, []byte("x")); err != unix.EPIPE {
		t.Errorf("write after the cut: %v, want EPIPE", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.streams) != 0 {
		t.Errorf("%d streams left", len(p.streams))
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition never met")
		}
	}
}
