package image

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxMetadata bounds what a manifest, an index or a config may be: each is
// read whole into memory, at whatever size the registry claims (digests
// catch a lie only once it is read). containerd caps the top manifest as
// much; ketch caps every one.
const maxMetadata = 4 << 20

// limitMetadata refuses, before fetching it, a manifest, index or config
// descriptor over maxMetadata.
var limitMetadata = images.HandlerFunc(func(_ context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	if images.IsManifestType(desc.MediaType) || images.IsIndexType(desc.MediaType) || images.IsConfigType(desc.MediaType) {
		if desc.Size > maxMetadata {
			return nil, fmt.Errorf("%s %s is %d bytes, over the %d-byte limit: %w", desc.MediaType, desc.Digest, desc.Size, maxMetadata, errdefs.ErrInvalidArgument)
		}
	}
	return nil, nil
})

// errStalled ends a pull that received nothing for Options.ProgressTimeout.
var errStalled = fmt.Errorf("pull made no progress: %w", context.DeadlineExceeded)

// progress is when a pull last received a byte from a registry, in Unix
// nanoseconds, updated by every request and body read.
type progress struct{ last atomic.Int64 }

type progressKey struct{}

func progressOf(ctx context.Context) *progress {
	p, _ := ctx.Value(progressKey{}).(*progress)
	return p
}

// watchProgress gives the pull a context that ends with errStalled once no
// byte has come for s.opts.ProgressTimeout; stop ends the watch.
func (s *Store) watchProgress(ctx context.Context) (_ context.Context, stop func()) {
	p := &progress{}
	p.touch()
	ctx = context.WithValue(ctx, progressKey{}, p)
	if s.opts.ProgressTimeout <= 0 {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(min(s.opts.ProgressTimeout/4, 10*time.Second))
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if time.Since(time.Unix(0, p.last.Load())) > s.opts.ProgressTimeout {
					cancel(fmt.Errorf("%w for %v", errStalled, s.opts.ProgressTimeout))
					return
				}
			}
		}
	}()
	return ctx, func() { close(done); cancel(nil) }
}

func (p *progress) touch() { p.last.Store(time.Now().UnixNano()) }

// transport counts what next receives as progress.
func (p *progress) transport(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	if p == nil {
		return next
	}
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(req)
		p.touch()
		if resp != nil && resp.Body != nil {
			resp.Body = progressBody{resp.Body, p}
		}
		return resp, err
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type progressBody struct {
	io.ReadCloser
	p *progress
}

func (b progressBody) Read(buf []byte) (int, error) {
	n, err := b.ReadCloser.Read(buf)
	if n > 0 {
		b.p.touch()
	}
	return n, err
}
