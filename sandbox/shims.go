package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/containerd/errdefs"

	"ketch.dev/ketch/metrics"
	"ketch.dev/ketch/oci/shim"
)

// DefaultPodsPerShim is how many pods one shim serves at most unless the
// Options say otherwise. A shim's memory is mostly the Go runtime's and
// its libraries', paid once a shim rather than once a pod; its death costs
// every pod it serves their containers (ShimDied), so the bound keeps that
// to a part of a node's pods. Measured (make compare, 110 pods): 16 a
// shim cost 417 KiB PSS a pod, 32 cost 297, CRI-O's conmon 342; the lean
// shim (no libcontainer) 32 a shim 203, 64 a shim 166; with one output
// pump a shim, its memory trimmed once its pods settle and a spec read in
// part, 32 a shim 161 (architecture.md).
const DefaultPodsPerShim = 32

// shimPool places pods in shims: a new pod goes to the fullest shim with
// room, or to a new one. Each pod directory links to its shim
// (shim.ShimLink), so a restarted ketchd counts them again (load).
// A shim ends by itself once its last pod has been shut down.
type shimPool struct {
	dir     string // <state>/shims
	binary  string
	perShim int

	mu sync.Mutex
	// shims by id, and the id of each pod's shim; guarded by mu.
	shims   map[string]*shimEntry
	podShim map[string]string
}

// shimEntry is one shim. Its fields but ready are guarded by shimPool.mu.
type shimEntry struct {
	id    string
	pods  int           // pods placed in it, or being placed
	dead  bool          // it took no pod when asked: none goes there again
	ready chan struct{} // closed once its launch is over
	err   error         // why the launch failed; set before ready closes
}

func (p *shimPool) shimDir(id string) string { return filepath.Join(p.dir, id) }

// placeAttempts bounds the shims a pod is offered to: one that is ending,
// or whose launch by another pod failed, makes it try the next.
const placeAttempts = 3

// place has a shim serve pod id, whose directory is podDir.
func (p *shimPool) place(ctx context.Context, id, podDir string) error {
	var err error
	for range placeAttempts {
		e, launch := p.reserve(id)
		err = p.launched(ctx, e, launch)
		// Another pod's failed launch, or a shim that ended meanwhile, is
		// no reason to fail this pod: it goes to the next shim.
		retry := !launch && err != nil
		if err == nil {
			err = shim.AddPod(ctx, p.shimDir(e.id), id, podDir)
			if err == nil {
				return nil
			}
			if errdefs.IsUnavailable(err) {
				p.mu.Lock()
				e.dead = true
				p.mu.Unlock()
				retry = !launch
			}
		}
		p.leave(id)
		if !retry || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// launched launches shim e, or waits for the launch another pod began,
// and returns the launch's error.
func (p *shimPool) launched(ctx context.Context, e *shimEntry, launch bool) error {
	if !launch {
		select {
		case <-e.ready:
		case <-ctx.Done():
			return ctx.Err()
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		return e.err
	}
	dir := p.shimDir(e.id)
	err := shim.Launch(ctx, shim.LaunchOptions{Binary: p.binary, Dir: dir, Log: filepath.Join(dir, "shim.log")})
	if err == nil {
		metrics.ShimLaunches.Inc()
	}
	p.mu.Lock()
	e.err, e.dead = err, err != nil
	p.mu.Unlock()
	close(e.ready)
	return err
}

// reserve counts pod id in the fullest shim with room, or in a new one,
// which the caller must then launch.
func (p *shimPool) reserve(id string) (_ *shimEntry, launch bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var best *shimEntry
	for _, e := range p.shims {
		if !e.dead && e.pods < p.perShim && (best == nil || e.pods > best.pods) {
			best = e
		}
	}
	if best == nil {
		best = &shimEntry{id: newShimID(), ready: make(chan struct{})}
		p.shims[best.id] = best
		launch = true
	}
	best.pods++
	p.podShim[id] = best.id
	return best, launch
}

func newShimID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// leave uncounts pod id, whose shim serves it no more (it was shut down,
// or the shim is gone). A shim left with no pod has ended with its last
// pod, or died, or never took its first: it is ended if need be, and its
// directory goes. Leaving twice does nothing.
func (p *shimPool) leave(id string) {
	p.mu.Lock()
	sid, ok := p.podShim[id]
	if ok {
		delete(p.podShim, id)
		e := p.shims[sid]
		if e.pods--; e.pods > 0 {
			ok = false
		} else {
			// A launch under way has its pod counted: e's is over.
			delete(p.shims, sid)
		}
	}
	p.mu.Unlock()
	if !ok {
		return
	}
	dir := p.shimDir(sid)
	if err := shim.Kill(dir); err != nil {
		slog.Warn("end a shim that serves no pod", "shim", sid, "err", err)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		slog.Warn("remove the directory of an ended shim", "shim", sid, "err", err)
	}
}

// load counts the pods of each shim from the links in the pod
// directories, as an earlier ketchd left them.
func (p *shimPool) load(podsDir string) error {
	pods, err := os.ReadDir(podsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, pod := range pods {
		target, err := os.Readlink(filepath.Join(podsDir, pod.Name(), shim.ShimLink))
		if err != nil {
			continue // a pod whose shim never took it, or an older one's
		}
		sid := filepath.Base(target)
		e := p.shims[sid]
		if e == nil {
			e = &shimEntry{id: sid, ready: make(chan struct{}), dead: !shim.Alive(p.shimDir(sid))}
			close(e.ready)
			p.shims[sid] = e
		}
		e.pods++
		p.podShim[pod.Name()] = sid
	}
	return nil
}

// collect ends the shims that serve no pod ketchd knows (a ketchd that
// died between a launch and the pod's AddPod leaves one) and removes the
// directories of those that ended. Only at start: a Run under way counts
// its pod in its shim, but its launch may not have begun.
func (p *shimPool) collect() error {
	ents, err := os.ReadDir(p.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("collect shims: %w", err)
	}
	var errs []error
	for _, ent := range ents {
		p.mu.Lock()
		_, known := p.shims[ent.Name()]
		p.mu.Unlock()
		if known {
			continue
		}
		dir := p.shimDir(ent.Name())
		if shim.Alive(dir) {
			slog.Warn("ending a shim that serves no pod", "shim", ent.Name())
		}
		if err := shim.Kill(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, os.RemoveAll(dir))
	}
	return errors.Join(errs...)
}
