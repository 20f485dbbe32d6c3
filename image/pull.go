package image

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/diff/apply"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/unpack"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.opentelemetry.io/otel/attribute"
	"golang.org/x/sync/semaphore"

	"ketch.dev/ketch/tracing"
)

// Auth is the registry credential a pull request carries (CRI AuthConfig).
type Auth struct {
	Username      string
	Password      string
	Auth          string // base64 "user:password", as in docker's config.json
	IdentityToken string // a refresh token for the registry's token service
	RegistryToken string // a bearer token, sent to the registry as it is
	ServerAddress string // when set, the credential is only for this host
}

// Pull fetches ref for this node's platform, verifies every blob against its
// digest, unpacks the layers into snapshots and records the image under ref,
// its repo digest and its ID. Concurrent pulls of one reference with the same
// credentials share a single download.
func (s *Store) Pull(ctx context.Context, ref string, auth *Auth) (_ Image, retErr error) {
	ctx, span := tracing.Start(ctx, "image.pull", attribute.String("image", ref))
	defer func() { tracing.End(span, retErr) }()
	name, err := Normalize(ref)
	if err != nil {
		return Image{}, err
	}
	key := name
	if auth != nil {
		sum := sha256.Sum256(fmt.Appendf(nil, "%+v", *auth))
		key += "|" + base64.RawStdEncoding.EncodeToString(sum[:])
	}
	img, err := s.pulls.do(ctx, key, func(ctx context.Context) (Image, error) {
		return s.pull(ctx, name, auth)
	})
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	return img, nil
}

func (s *Store) pull(ctx context.Context, name string, auth *Auth) (_ Image, retErr error) {
	ctx = s.ns(ctx)
	start := time.Now()
	// Everything this pull writes hangs on a lease until the image record
	// references it; on failure dropping the lease lets the collector remove
	// the partial content and snapshots.
	lease, err := s.leases.Create(ctx, leases.WithRandomID(), leases.WithExpiration(24*time.Hour))
	if err != nil {
		return Image{}, fmt.Errorf("create pull lease: %w", err)
	}
	ctx = leases.WithLease(ctx, lease.ID)
	defer func() {
		// The lease must go even when the caller's context is done.
		cctx := context.WithoutCancel(ctx)
		if err := s.leases.Delete(cctx, lease); err != nil {
			slog.Warn("delete pull lease", "lease", lease.ID, "err", err)
		}
		if retErr != nil {
			if err := s.collect(cctx); err != nil {
				slog.Warn("collect after failed pull", "image", name, "err", err)
			}
		}
	}()

	ctx, watched := s.watchProgress(ctx)
	defer watched()
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: config.ConfigureHosts(ctx, config.HostOptions{
			HostDir:     config.HostDirFromRoot(s.opts.HostsDir),
			Credentials: credentials(auth),
			UpdateClient: func(c *http.Client) error {
				if auth != nil && auth.RegistryToken != "" {
					c.Transport = bearer{token: auth.RegistryToken, host: tokenHost(auth.ServerAddress, name), next: c.Transport}
				}
				c.Transport = progressOf(ctx).transport(c.Transport)
				return nil
			},
		}),
	})
	resolved, desc, err := resolver.Resolve(ctx, name)
	if err != nil {
		return Image{}, classify(ctx, fmt.Errorf("resolve: %w", err))
	}
	fetcher, err := resolver.Fetcher(ctx, resolved)
	if err != nil {
		return Image{}, classify(ctx, err)
	}
	unpacker, err := unpack.NewUnpacker(ctx, s.content,
		unpack.WithUnpackPlatform(unpack.Platform{
			Platform:       s.platform,
			SnapshotterKey: Snapshotter,
			Snapshotter:    s.snap,
			Applier:        apply.NewFileSystemApplier(s.content),
			// Layers are applied as they arrive, each onto a snapshot of
			// its own, and rebased onto their parents at commit (containerd
			// 2.2's parallel unpack); one by one otherwise.
			SnapshotterCapabilities: []string{snapshots.RebaseCap},
		}),
		unpack.WithLimiter(semaphore.NewWeighted(int64(s.opts.MaxConcurrentDownloads))),
		unpack.WithUnpackLimiter(semaphore.NewWeighted(int64(s.opts.MaxConcurrentDownloads))),
	)
	if err != nil {
		return Image{}, fmt.Errorf("unpacker: %w", err)
	}
	children := images.ChildrenHandler(s.content)
	children = images.SetChildrenMappedLabels(s.content, children, nil)
	children = images.FilterPlatforms(children, s.platform)
	children = images.LimitManifests(children, s.platform, 1)
	source, err := docker.AppendDistributionSourceLabel(s.content, resolved)
	if err != nil {
		return Image{}, err
	}
	handler := unpacker.Unpack(images.Handlers(limitMetadata, remotes.FetchHandler(s.content, fetcher), children, source))
	dispatchErr := images.Dispatch(ctx, handler, nil, desc)
	res, waitErr := unpacker.Wait()
	if err := errors.Join(dispatchErr, waitErr); err != nil {
		return Image{}, classify(ctx, err)
	}
	if res.Unpacks == 0 {
		return Image{}, fmt.Errorf("%s has no layers for this platform: %w", name, errdefs.ErrNotFound)
	}
	img, err := s.describe(ctx, desc)
	if err != nil {
		return Image{}, err
	}
	if err := s.record(ctx, img, desc, name, resolved); err != nil {
		return Image{}, err
	}
	slog.Info("pulled image", "image", name, "id", img.ID, "size", img.Size, "duration", time.Since(start))
	return s.Get(ctx, img.ID)
}

// record names the pulled target by ref, repo@digest and ID. A tag that
// pointed at another image moves here; that image keeps its other names.
func (s *Store) record(ctx context.Context, img *Image, target ocispec.Descriptor, name, resolved string) error {
	named, err := reference.ParseNormalizedNamed(resolved)
	if err != nil {
		return fmt.Errorf("parse resolved name %q: %w", resolved, err)
	}
	repoDigest := reference.TrimNamed(named).String() + "@" + target.Digest.String()
	names := []string{img.ID, repoDigest}
	if name != repoDigest {
		names = append(names, name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range names {
		rec := images.Image{Name: n, Target: target}
		if _, err := s.images.Create(ctx, rec); errdefs.IsAlreadyExists(err) {
			_, err = s.images.Update(ctx, rec, "target")
			if err != nil {
				return fmt.Errorf("update image record %s: %w", n, err)
			}
		} else if err != nil {
			return fmt.Errorf("create image record %s: %w", n, err)
		}
		for id, other := range s.byID {
			if id != img.ID {
				other.RepoTags = remove(other.RepoTags, n)
				other.RepoDigests = remove(other.RepoDigests, n)
			}
		}
	}
	if have, ok := s.byID[img.ID]; ok {
		img.RepoTags, img.RepoDigests = have.RepoTags, have.RepoDigests
	}
	for _, n := range names {
		addName(img, n)
	}
	s.byID[img.ID] = img
	return nil
}

func remove(list []string, v string) []string {
	out := list[:0]
	for _, x := range list {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

// credentials answers the resolver's per-host question from the request's
// AuthConfig, the way docker's config.json entries are read.
func credentials(auth *Auth) func(host string) (string, string, error) {
	return func(host string) (string, string, error) {
		if auth == nil {
			return "", "", nil
		}
		if auth.ServerAddress != "" && serverHost(auth.ServerAddress) != host {
			return "", "", nil
		}
		switch {
		case auth.Username != "" || auth.Password != "":
			return auth.Username, auth.Password, nil
		case auth.Auth != "":
			raw, err := base64.StdEncoding.DecodeString(auth.Auth)
			if err != nil {
				return "", "", fmt.Errorf("decode auth: %v: %w", err, errdefs.ErrInvalidArgument)
			}
			user, pass, ok := strings.Cut(string(raw), ":")
			if !ok {
				return "", "", fmt.Errorf("auth is not user:password: %w", errdefs.ErrInvalidArgument)
			}
			return user, pass, nil
		case auth.IdentityToken != "":
			return "", auth.IdentityToken, nil
		}
		return "", "", nil
	}
}

// bearer sends a registry token the caller already holds (from a kubelet
// credential provider) with every request to its registry's host, where the
// token service would otherwise be asked for one; never to another host: a
// mirror, or a blob store a registry redirects to.
type bearer struct {
	token, host string
	next        http.RoundTripper
}

// tokenHost is the host a registry token is for: the request's server
// address, else the registry of the image reference.
func tokenHost(serverAddress, name string) string {
	if h := serverHost(serverAddress); h != "" {
		return h
	}
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return ""
	}
	return serverHost(reference.Domain(named))
}

func (b bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("Authorization") == "" && b.host != "" && b.host == req.URL.Host {
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", "Bearer "+b.token)
	}
	next := b.next
	if next == nil {
		next = http.DefaultTransport
	}
	return next.RoundTrip(req)
}

// serverHost strips a scheme and path from a docker config server address.
func serverHost(addr string) string {
	if addr == "" {
		return ""
	}
	addr = strings.TrimPrefix(strings.TrimPrefix(addr, "https://"), "http://")
	host, _, _ := strings.Cut(addr, "/")
	if host == "index.docker.io" || host == "docker.io" {
		return "registry-1.docker.io"
	}
	return host
}

// classify gives a pull failure the sentinel the CRI reports it with.
func classify(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, errStalled) {
		return fmt.Errorf("%w (%v)", cause, err)
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%w (%v)", ctxErr, err)
	}
	if errors.Is(err, docker.ErrInvalidAuthorization) {
		return fmt.Errorf("%w: %w", errdefs.ErrUnauthenticated, err)
	}
	var status remoteerrors.ErrUnexpectedStatus
	if errors.As(err, &status) {
		switch status.StatusCode {
		case http.StatusUnauthorized:
			return fmt.Errorf("%w: %w", errdefs.ErrUnauthenticated, err)
		case http.StatusForbidden:
			return fmt.Errorf("%w: %w", errdefs.ErrPermissionDenied, err)
		case http.StatusNotFound:
			return fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
		}
	}
	var netErr net.Error
	if errors.As(err, &netErr) && !errdefs.IsNotFound(err) {
		return fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
	}
	if errdefs.IsFailedPrecondition(err) && strings.Contains(err.Error(), "digest") {
		return fmt.Errorf("%w: content does not match its digest: %w", errdefs.ErrDataLoss, err)
	}
	return err
}
