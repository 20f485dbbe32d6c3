package image

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestPullGroupShares(t *testing.T) {
	var g pullGroup
	var calls atomic.Int32
	release := make(chan struct{})
	fn := func(ctx context.Context) (Image, error) {
		calls.Add(1)
		<-release
		return Image{ID: "sha256:x"}, nil
	}
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			img, err := g.do(context.Background(), "k", fn)
			if err != nil || img.ID != "sha256:x" {
				t.Errorf("do = %v, %v", img, err)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond) // let every caller join
	close(release)
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("fn ran %d times for 5 concurrent callers, want 1", n)
	}
}

func TestPullGroupCancel(t *testing.T) {
	for _, tc := range []struct {
		desc         string
		stayers      int  // callers that keep waiting
		wantCanceled bool // the shared pull's context gets cancelled
	}{
		{"one of two callers leaves: the pull goes on", 1, false},
		{"the only caller leaves: the pull is cancelled", 0, true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var g pullGroup
			started := make(chan struct{})
			release := make(chan struct{})
			var sawCancel atomic.Bool
			fn := func(ctx context.Context) (Image, error) {
				close(started)
				select {
				case <-ctx.Done():
					sawCancel.Store(true)
					return Image{}, ctx.Err()
				case <-release:
					return Image{ID: "sha256:x"}, nil
				}
			}
			leaver, cancel := context.WithCancel(context.Background())
			leaverErr := make(chan error, 1)
			go func() {
				_, err := g.do(leaver, "k", fn)
				leaverErr <- err
			}()
			<-started
			stayerDone := make(chan error, tc.stayers)
			for range tc.stayers {
				go func() {
					_, err := g.do(context.Background(), "k", fn)
					stayerDone <- err
				}()
			}
			time.Sleep(50 * time.Millisecond)
			cancel()
			if err := <-leaverErr; !errors.Is(err, context.Canceled) {
				t.Errorf("leaving caller got %v, want Canceled", err)
			}
			close(release)
			for range tc.stayers {
				if err := <-stayerDone; err != nil {
					t.Errorf("staying caller got %v", err)
				}
			}
			if sawCancel.Load() != tc.wantCanceled {
				t.Errorf("shared pull cancelled = %v, want %v", sawCancel.Load(), tc.wantCanceled)
			}
		})
	}
}

func TestCtxErrDeadline(t *testing.T) {
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if err := ctxErr(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ctxErr past deadline = %v", err)
	}
}
