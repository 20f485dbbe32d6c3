// Package image owns ketch's images: pulling them from registries, the
// digest-verified content store, layers unpacked into overlay snapshots, and
// the image metadata the CRI ImageService reports.
//
// It is built from containerd's libraries without a containerd daemon: a
// bbolt metadata database (core/metadata) ties image names to content and
// snapshots, so removing the last name of an image lets its garbage collector
// delete exactly the blobs and snapshots nothing else uses.
package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/metadata"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
)

const (
	// namespace keeps ketch's records apart inside containerd's metadata schema.
	namespace = "ketch"
	// Snapshotter is the name containers use to find image snapshots.
	Snapshotter = "overlayfs"
)

// Image is what the CRI knows of one image: one config digest, and every
// name that points at it.
type Image struct {
	ID          string // config digest: the image ID kubelet and crictl show
	RepoTags    []string
	RepoDigests []string
	Size        uint64 // manifest + config + compressed layers, as containerd reports it
	Config      ocispec.Image
	// ChainID names the committed snapshot of the top layer: the parent of a
	// container's rootfs.
	ChainID digest.Digest
}

// Options configure a Store. Zero values take the defaults.
type Options struct {
	Root string // holds content/, snapshots/ and meta.db
	// HostsDir holds containerd-compatible <host>/hosts.toml files (mirrors,
	// plain HTTP, CAs).
	HostsDir string
	// MaxConcurrentDownloads bounds the layer downloads of one pull.
	MaxConcurrentDownloads int
	// ProgressTimeout ends a pull that received no byte for this long (a
	// registry that stalls or trickles); 0 never does.
	ProgressTimeout time.Duration
	Platform        platforms.MatchComparer
}

// Store pulls, lists and removes images. It is safe for concurrent use.
type Store struct {
	opts     Options
	db       *metadata.DB
	bdb      *bolt.DB
	images   images.Store
	content  content.Store
	snap     snapshots.Snapshotter // through the metadata database
	overlay  snapshots.Snapshotter // the snapshotter itself, closed last
	leases   leases.Manager
	platform platforms.MatchComparer

	pulls pullGroup

	// mu guards byID, which mirrors the metadata database so that status and
	// list calls never read the disk; it also serialises record changes so
	// that a remove and a pull of one image cannot interleave.
	mu   sync.RWMutex
	byID map[string]*Image

	// kick asks the collector goroutine for a garbage collection; one
	// pending request stands for any number made meanwhile. stop ends the
	// collector, which closes collected when it has.
	kick      chan struct{}
	stop      context.CancelFunc
	collected chan struct{}
}

// Open opens (or creates) the image store under opts.Root and loads every
// image it holds.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.MaxConcurrentDownloads <= 0 {
		opts.MaxConcurrentDownloads = 3
	}
	if opts.Platform == nil {
		opts.Platform = platforms.Default()
	}
	if err := os.MkdirAll(opts.Root, 0o700); err != nil {
		return nil, fmt.Errorf("open image store: %w", err)
	}
	cs, err := local.NewStore(filepath.Join(opts.Root, "content"))
	if err != nil {
		return nil, fmt.Errorf("open content store: %w", err)
	}
	// WithRemapIDs: snapshots labelled with ID mappings (WithIDMapping)
	// are mounted idmapped; the others as before. AsynchronousRemove: a
	// removed snapshot's files go at the collection's Cleanup, once for
	// all; otherwise each removal reads every snapshot's record and
	// directory (10,000 exited containers took minutes to remove).
	sn, err := overlay.NewSnapshotter(filepath.Join(opts.Root, "snapshots"), overlay.WithRemapIDs, overlay.AsynchronousRemove)
	if err != nil {
		return nil, fmt.Errorf("open overlay snapshotter: %w", err)
	}
	bdb, err := bolt.Open(filepath.Join(opts.Root, "meta.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		sn.Close()
		return nil, fmt.Errorf("open image metadata (is another ketchd using %s?): %w", opts.Root, err)
	}
	db := metadata.NewDB(bdb, cs, map[string]snapshots.Snapshotter{Snapshotter: sn})
	if err := db.Init(ctx); err != nil {
		bdb.Close()
		sn.Close()
		return nil, fmt.Errorf("init image metadata: %w", err)
	}
	s := &Store{
		opts:     opts,
		db:       db,
		bdb:      bdb,
		images:   metadata.NewImageStore(db),
		content:  db.ContentStore(),
		snap:     db.Snapshotter(Snapshotter),
		overlay:  sn,
		leases:   metadata.NewLeaseManager(db),
		platform: opts.Platform,
		byID:     map[string]*Image{},
		kick:     make(chan struct{}, 1),
	}
	ctx = s.ns(ctx)
	var cctx context.Context
	cctx, s.stop = context.WithCancel(context.WithoutCancel(ctx))
	s.collected = make(chan struct{})
	go s.collector(cctx)
	// A pull that was under way when ketchd died left a lease behind; dropping
	// it lets the collector remove what that pull had written. The
	// collector does, after ketchd serves: a collection walks every
	// snapshot, ~95 ms of a restart with 11,000 containers.
	ls, err := s.leases.List(ctx)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("list leases: %w", err)
	}
	for _, l := range ls {
		if err := s.leases.Delete(ctx, l); err != nil {
			slog.Warn("drop stale pull lease", "lease", l.ID, "err", err)
		}
	}
	s.collectSoon()
	// A snapshot directory renamed into place by a ketchd that died before
	// committing its record would be in the way of the next snapshot
	// given the same ID: the snapshotter removes directories it has no
	// record of.
	if c, ok := sn.(snapshots.Cleaner); ok {
		if err := c.Cleanup(ctx); err != nil && !errdefs.IsNotFound(err) { // NotFound: no snapshot yet
			slog.Warn("snapshot clean-up", "err", err)
		}
	}
	if err := s.reload(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close ends the collector and releases the database and the snapshotter.
func (s *Store) Close() error {
	s.stop()
	<-s.collected
	return errors.Join(s.db.Close(), s.bdb.Close(), s.overlay.Close())
}

// ContentStore and Snapshotter give the container side the image's blobs and
// the overlay snapshotter its rootfs comes from.
func (s *Store) ContentStore() content.Store        { return s.content }
func (s *Store) Snapshotter() snapshots.Snapshotter { return s.snap }
func (s *Store) ns(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, namespace)
}

// reload rebuilds byID from the metadata database.
func (s *Store) reload(ctx context.Context) error {
	recs, err := s.images.List(ctx)
	if err != nil {
		return fmt.Errorf("list image records: %w", err)
	}
	byID := map[string]*Image{}
	for _, r := range recs {
		img, err := s.describe(ctx, r.Target)
		if err != nil {
			slog.Warn("skip unreadable image record", "image", r.Name, "err", err)
			continue
		}
		if have, ok := byID[img.ID]; ok {
			img = have
		} else {
			byID[img.ID] = img
		}
		addName(img, r.Name)
	}
	s.mu.Lock()
	s.byID = byID
	s.mu.Unlock()
	return nil
}

// describe reads the image a target descriptor (index or manifest) names for
// this node's platform.
func (s *Store) describe(ctx context.Context, target ocispec.Descriptor) (*Image, error) {
	manifest, err := images.Manifest(ctx, s.content, target, s.platform)
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", target.Digest, err)
	}
	raw, err := content.ReadBlob(ctx, s.content, manifest.Config)
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", manifest.Config.Digest, err)
	}
	img := &Image{ID: manifest.Config.Digest.String()}
	if err := json.Unmarshal(raw, &img.Config); err != nil {
		return nil, fmt.Errorf("parse config %s: %w", manifest.Config.Digest, err)
	}
	img.ChainID = identity.ChainID(img.Config.RootFS.DiffIDs)
	size, err := (&images.Image{Target: target}).Size(ctx, s.content, s.platform)
	if err != nil {
		return nil, fmt.Errorf("size of %s: %w", target.Digest, err)
	}
	img.Size = uint64(size)
	return img, nil
}

// addName files a record name under the image as a tag or a digest; the
// record named by the ID itself is neither.
func addName(img *Image, name string) {
	switch {
	case name == img.ID:
	case isDigested(name):
		if !slices.Contains(img.RepoDigests, name) {
			img.RepoDigests = append(img.RepoDigests, name)
			sort.Strings(img.RepoDigests)
		}
	default:
		if !slices.Contains(img.RepoTags, name) {
			img.RepoTags = append(img.RepoTags, name)
			sort.Strings(img.RepoTags)
		}
	}
}

// Get finds an image by ID (full or a unique prefix of at least 3 hex
// digits), name:tag, name@digest or short name.
func (s *Store) Get(ctx context.Context, ref string) (Image, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	img, err := s.lookup(ref)
	if err != nil {
		return Image{}, err
	}
	return clone(img), nil
}

// lookup needs s.mu held.
func (s *Store) lookup(ref string) (*Image, error) {
	if ref == "" {
		return nil, fmt.Errorf("image reference is empty: %w", errdefs.ErrInvalidArgument)
	}
	if img, ok := s.byID[ref]; ok {
		return img, nil
	}
	if name, err := Normalize(ref); err == nil {
		for _, img := range s.byID {
			if slices.Contains(img.RepoTags, name) || slices.Contains(img.RepoDigests, name) {
				return img, nil
			}
		}
	}
	if id, ok := idPrefix(ref); ok {
		var found *Image
		for key, img := range s.byID {
			if strings.HasPrefix(key, id) {
				if found != nil {
					return nil, fmt.Errorf("image id prefix %q is ambiguous: %w", ref, errdefs.ErrInvalidArgument)
				}
				found = img
			}
		}
		if found != nil {
			return found, nil
		}
	}
	// An ID (or prefix) names no image; anything else must at least be a
	// reference ("0000…" in 64 hex digits is an ID, never a repository).
	if _, isID := idPrefix(ref); !isID {
		if _, err := Normalize(ref); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
}

// List returns every image, ordered by ID.
func (s *Store) List(ctx context.Context) ([]Image, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Image, 0, len(s.byID))
	for _, img := range s.byID {
		out = append(out, clone(img))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Remove deletes every name of the image ref points at, then its content and
// snapshots unless another image shares them. Removing an image that is not
// there succeeds: kubelet retries removals.
func (s *Store) Remove(ctx context.Context, ref string) error {
	ctx = s.ns(ctx)
	s.mu.Lock()
	img, err := s.lookup(ref)
	if errdefs.IsNotFound(err) {
		s.mu.Unlock()
		return nil
	}
	if err != nil {
		s.mu.Unlock()
		return err
	}
	names := append(append([]string{img.ID}, img.RepoTags...), img.RepoDigests...)
	for _, n := range names {
		if err := s.images.Delete(ctx, n); err != nil && !errdefs.IsNotFound(err) {
			s.mu.Unlock()
			return fmt.Errorf("remove image %s name %s: %w", img.ID, n, err)
		}
	}
	delete(s.byID, img.ID)
	s.mu.Unlock()
	return s.collect(ctx)
}

// collector runs the garbage collections asked for with collectSoon, one
// at a time.
func (s *Store) collector(ctx context.Context) {
	defer close(s.collected)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
			if err := s.collect(ctx); err != nil && ctx.Err() == nil {
				slog.Warn("image garbage collection", "err", err)
			}
		}
	}
}

// collectSoon has the collector run a garbage collection. A collection
// walks every snapshot and blob under one lock: run for each removed
// container, a node keeping 10,000 of them spent minutes removing a pod.
// Those asked for while one runs share the next.
func (s *Store) collectSoon() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// collect deletes content and snapshots no image or live pull references.
func (s *Store) collect(ctx context.Context) error {
	if _, err := s.db.GarbageCollect(ctx); err != nil {
		return fmt.Errorf("image garbage collection: %w", err)
	}
	return nil
}

func clone(img *Image) Image {
	c := *img
	c.RepoTags = slices.Clone(img.RepoTags)
	c.RepoDigests = slices.Clone(img.RepoDigests)
	return c
}
