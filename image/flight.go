package image

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// pullGroup lets concurrent pulls of one image share a single download. The
// shared pull runs on its own context, cancelled only when every caller
// waiting for it has given up, so one impatient caller cannot fail the others
// and a pull nobody waits for any more stops and cleans up.
type pullGroup struct {
	mu      sync.Mutex // guards flights and each flight's waiters
	flights map[string]*flight
}

type flight struct {
	waiters int
	cancel  context.CancelFunc
	done    chan struct{}
	img     Image // set before done is closed
	err     error
}

func (g *pullGroup) do(ctx context.Context, key string, fn func(context.Context) (Image, error)) (Image, error) {
	g.mu.Lock()
	if g.flights == nil {
		g.flights = map[string]*flight{}
	}
	f, ok := g.flights[key]
	if !ok {
		// The shared context keeps the first caller's values (logging
		// attributes) but not its cancellation; the earliest deadline of
		// the callers still bounds it through the waiter accounting below.
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{cancel: cancel, done: make(chan struct{})}
		g.flights[key] = f
		go func() {
			f.img, f.err = recovered(fctx, fn)
			g.mu.Lock()
			if g.flights[key] == f {
				delete(g.flights, key)
			}
			g.mu.Unlock()
			cancel()
			close(f.done)
		}()
	}
	f.waiters++
	g.mu.Unlock()

	select {
	case <-f.done:
		return f.img, f.err
	case <-ctx.Done():
		g.mu.Lock()
		f.waiters--
		last := f.waiters == 0
		if last {
			f.cancel()
			// A caller arriving now must not join a pull being cancelled.
			if g.flights[key] == f {
				delete(g.flights, key)
			}
		}
		g.mu.Unlock()
		// The last caller waits for the abandoned pull to undo its work, so a
		// failed request leaves nothing behind.
		if last {
			<-f.done
		}
		return Image{}, ctxErr(ctx)
	}
}

// ctxErr reports a request whose deadline has passed as DeadlineExceeded even
// when its client cancelled it first (gRPC clients cancel at their deadline),
// so callers see which of the two happened.
func ctxErr(ctx context.Context) error {
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return ctx.Err()
}

// recovered runs fn, turning a panic into an error: the pull runs on a
// goroutine of its own, beyond the reach of the gRPC interceptor's recover,
// and a panic there would end ketchd and every call in flight.
func recovered(ctx context.Context, fn func(context.Context) (Image, error)) (img Image, err error) {
	defer func() {
		if p := recover(); p != nil {
			slog.Error("pull panicked", "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("pull panicked: %v: %w", p, errdefs.ErrInternal)
		}
	}()
	return fn(ctx)
}
