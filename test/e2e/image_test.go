//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func spec(ref string) *runtimeapi.ImageSpec { return &runtimeapi.ImageSpec{Image: ref} }

func (d *daemon) pull(tb testing.TB, ref string, auth *runtimeapi.AuthConfig) (string, error) {
	tb.Helper()
	resp, err := d.img.PullImage(ctxT(tb, 2*time.Minute), &runtimeapi.PullImageRequest{Image: spec(ref), Auth: auth})
	return resp.GetImageRef(), err
}

func (d *daemon) mustPull(tb testing.TB, ref string) string {
	tb.Helper()
	id, err := d.pull(tb, ref, nil)
	if err != nil {
		tb.Fatalf("pull %s: %v", ref, err)
	}
	return id
}

func (d *daemon) status(tb testing.TB, ref string) *runtimeapi.Image {
	tb.Helper()
	resp, err := d.img.ImageStatus(ctxT(tb, 10*time.Second), &runtimeapi.ImageStatusRequest{Image: spec(ref)})
	if err != nil {
		tb.Fatalf("image status %s: %v", ref, err)
	}
	return resp.GetImage()
}

func (d *daemon) list(tb testing.TB) []*runtimeapi.Image {
	tb.Helper()
	resp, err := d.img.ListImages(ctxT(tb, 10*time.Second), &runtimeapi.ListImagesRequest{})
	if err != nil {
		tb.Fatalf("list images: %v", err)
	}
	return resp.GetImages()
}

func (d *daemon) remove(tb testing.TB, ref string) {
	tb.Helper()
	if _, err := d.img.RemoveImage(ctxT(tb, 30*time.Second), &runtimeapi.RemoveImageRequest{Image: spec(ref)}); err != nil {
		tb.Fatalf("remove %s: %v", ref, err)
	}
}

// storeFiles counts what the image store holds on disk: blobs, snapshots and
// unfinished downloads. A failed pull must leave all three as they were.
type storeFiles struct{ blobs, snapshots, ingests int }

func (d *daemon) files(tb testing.TB) storeFiles {
	tb.Helper()
	count := func(dir string) int {
		ents, err := os.ReadDir(filepath.Join(d.root, "image", dir))
		if err != nil && !os.IsNotExist(err) {
			tb.Fatal(err)
		}
		return len(ents)
	}
	return storeFiles{
		blobs:     count("content/blobs/sha256"),
		snapshots: count("snapshots/snapshots"),
		ingests:   count("content/ingest"),
	}
}

// waitFiles waits a bounded time for the store to hold want, for failures
// the client sees before ketchd has finished cleaning up.
func (d *daemon) waitFiles(tb testing.TB, want storeFiles) {
	tb.Helper()
	var got storeFiles
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got = d.files(tb); got == want {
			return
		}
	}
	tb.Errorf("store holds %+v, want %+v", got, want)
}

// TestPullFormats pulls each kind of image a registry serves and checks what
// kubelet and crictl read back.
func TestPullFormats(t *testing.T) {
	d := startKetchd(t, daemonOpts{})
	for _, tc := range []struct {
		desc, ref string
		layers    int
	}{
		{"OCI manifest, gzip layers", busybox, 1},
		{"Docker v2 schema 2 manifest", registry + "/ketch-test/docker-v2s2:1", 2},
		{"zstd layers", registry + "/ketch-test/zstd:1", 2},
		{"multi-platform index", registry + "/ketch-test/multiarch:1", 2},
		{"five layers", multilayer, 5},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			id := d.mustPull(t, tc.ref)
			if !strings.HasPrefix(id, "sha256:") {
				t.Fatalf("image ref %q is not a config digest", id)
			}
			img := d.status(t, tc.ref)
			if img.GetId() != id || !slices.Contains(img.RepoTags, tc.ref) || len(img.RepoDigests) != 1 || img.Size == 0 {
				t.Fatalf("status by tag = %+v, want id %s, tag %s, one digest, a size", img, id, tc.ref)
			}
			for _, ref := range []string{id, img.RepoDigests[0], strings.TrimPrefix(id, "sha256:")[:12]} {
				if got := d.status(t, ref).GetId(); got != id {
					t.Errorf("status by %q = %q, want %q", ref, got, id)
				}
			}
			resp, err := d.img.ImageStatus(ctxT(t, 10*time.Second), &runtimeapi.ImageStatusRequest{Image: spec(id), Verbose: true})
			if err != nil {
				t.Fatal(err)
			}
			var info struct {
				ImageSpec struct {
					Architecture string
					RootFS       struct {
						DiffIDs []string `json:"diff_ids"`
					} `json:"rootfs"`
				} `json:"imageSpec"`
			}
			if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil {
				t.Fatalf("verbose info %q: %v", resp.Info["info"], err)
			}
			if info.ImageSpec.Architecture != "amd64" || len(info.ImageSpec.RootFS.DiffIDs) != tc.layers {
				t.Errorf("verbose config = %+v, want amd64 with %d layers", info.ImageSpec, tc.layers)
			}
			if !slices.ContainsFunc(d.list(t), func(i *runtimeapi.Image) bool { return i.Id == id }) {
				t.Errorf("ListImages lacks %s", id)
			}
			if d.files(t).snapshots < tc.layers {
				t.Errorf("%d snapshots after pulling %d layers", d.files(t).snapshots, tc.layers)
			}
		})
	}
}

// TestPullByDigest pulls by name@digest and by name:tag@digest, which both
// name the image by digest only, as containerd does.
func TestPullByDigest(t *testing.T) {
	d := startKetchd(t, daemonOpts{})
	id := d.mustPull(t, busybox)
	digested := d.status(t, busybox).RepoDigests[0]
	d.remove(t, id)
	for _, ref := range []string{digested, busybox + "@" + strings.SplitN(digested, "@", 2)[1]} {
		if got := d.mustPull(t, ref); got != id {
			t.Errorf("pull %s = %s, want %s", ref, got, id)
		}
		img := d.status(t, ref)
		if img.GetId() != id || len(img.RepoTags) != 0 || !slices.Equal(img.RepoDigests, []string{digested}) {
			t.Errorf("status %s = %+v, want only repo digest %s", ref, img, digested)
		}
	}
}

// TestImageUser checks the uid or user name kubelet's runAsNonRoot reads.
func TestImageUser(t *testing.T) {
	d := startKetchd(t, daemonOpts{})
	const gcr = "gcr.io/k8s-staging-cri-tools/"
	for _, tc := range []struct {
		desc, ref, username string
		uid                 int64 // -1: none
	}{
		{"numeric user", gcr + "test-image-user-uid:latest", "", 1002},
		{"user name", gcr + "test-image-user-username:latest", "www-data", -1},
		{"uid:gid", gcr + "test-image-user-uid-group:latest", "", 1003},
		{"name:group", gcr + "test-image-user-username-group:latest", "www-data", -1},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			d.mustPull(t, tc.ref)
			img := d.status(t, tc.ref)
			if img.Username != tc.username || (tc.uid < 0) != (img.Uid == nil) || (img.Uid != nil && img.Uid.Value != tc.uid) {
				t.Errorf("user = %q uid %v, want %q uid %d", img.Username, img.Uid, tc.username, tc.uid)
			}
		})
	}
}

// TestShortNames: "busybox" means docker.io/library/busybox:latest, as with
// containerd and docker. The harness maps docker.io to the local registry.
func TestShortNames(t *testing.T) {
	d := startKetchd(t, daemonOpts{})
	id := d.mustPull(t, "busybox")
	img := d.status(t, "docker.io/library/busybox:latest")
	if img.GetId() != id || !slices.Equal(img.RepoTags, []string{"docker.io/library/busybox:latest"}) {
		t.Fatalf("status = %+v, want the normalised tag", img)
	}
	for _, ref := range []string{"busybox", "busybox:latest", "library/busybox", "docker.io/busybox"} {
		if got := d.status(t, ref).GetId(); got != id {
			t.Errorf("status %q = %q, want %q", ref, got, id)
		}
	}
}

// TestPullAuth: credentials from the request's AuthConfig, against a registry
// with Basic auth and one with a bearer token service.
func TestPullAuth(t *testing.T) {
	d := startKetchd(t, daemonOpts{})
	tokens := newProxy(t, func(p *proxy) { p.bearer = true })
	basicRef := authRegistry + "/e2e-test-images/busybox:1.29-2"
	bearerRef := tokens.host + "/e2e-test-images/busybox:1.29-2"
	for _, tc := range []struct {
		desc string
		ref  string
		auth *runtimeapi.AuthConfig
		want codes.Code
	}{
		{"basic: no credentials", basicRef, nil, codes.Unauthenticated},
		{"basic: wrong password", basicRef, &runtimeapi.AuthConfig{Username: authUser, Password: "wrong"}, codes.Unauthenticated},
		{"basic: credentials for another server", basicRef, &runtimeapi.AuthConfig{Username: authUser, Password: authPassword, ServerAddress: "elsewhere.example"}, codes.Unauthenticated},
		{"basic: username and password", basicRef, &runtimeapi.AuthConfig{Username: authUser, Password: authPassword}, codes.OK},
		{"basic: auth field", basicRef, &runtimeapi.AuthConfig{Auth: base64.StdEncoding.EncodeToString([]byte(authUser + ":" + authPassword)), ServerAddress: authRegistry}, codes.OK},
		{"bearer: no credentials", bearerRef, nil, codes.Unauthenticated},
		{"bearer: wrong password", bearerRef, &runtimeapi.AuthConfig{Username: authUser, Password: "wrong"}, codes.Unauthenticated},
		{"bearer: username and password", bearerRef, &runtimeapi.AuthConfig{Username: authUser, Password: authPassword}, codes.OK},
		{"bearer: identity token", bearerRef, &runtimeapi.AuthConfig{IdentityToken: "good-refresh-token"}, codes.OK},
		{"bearer: registry token", bearerRef, &runtimeapi.AuthConfig{RegistryToken: "good-token"}, codes.OK},
		{"bearer: wrong registry token", bearerRef, &runtimeapi.AuthConfig{RegistryToken: "stolen-token"}, codes.Unauthenticated},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			before := d.files(t)
			id, err := d.pull(t, tc.ref, tc.auth)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("pull = %v, want %v", err, tc.want)
			}
			if err != nil {
				if after := d.files(t); after != before {
					t.Errorf("failed pull left files: before %+v after %+v", before, after)
				}
				return
			}
			d.remove(t, id)
		})
	}
}

// TestPullBadInput: each bad request gets its own code, leaves nothing in
// the store, and ketchd keeps serving.
func TestPullBadInput(t *testing.T) {
	d := startKetchd(t, daemonOpts{})
	for _, tc := range []struct {
		desc, ref string
		want      codes.Code
	}{
		{"empty reference", "", codes.InvalidArgument},
		{"upper-case repository", registry + "/Busybox:1", codes.InvalidArgument},
		{"malformed reference", "busybox::1", codes.InvalidArgument},
		{"malformed digest", busybox + "@sha256:abc", codes.InvalidArgument},
		{"unknown repository", registry + "/ketch-test/no-such-image:1", codes.NotFound},
		{"unknown tag", registry + "/e2e-test-images/busybox:no-such-tag", codes.NotFound},
		{"unknown digest", registry + "/e2e-test-images/busybox@sha256:" + strings.Repeat("0", 64), codes.NotFound},
		{"unreachable registry", "127.0.0.1:1/ketch-test/x:1", codes.Unavailable},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			before := d.files(t)
			_, err := d.pull(t, tc.ref, nil)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("pull %q = %v, want %v", tc.ref, err, tc.want)
			}
			if after := d.files(t); after != before {
				t.Errorf("failed pull left files: before %+v after %+v", before, after)
			}
			if _, err := d.rt.Version(ctxT(t, 5*time.Second), &runtimeapi.VersionRequest{}); err != nil {
				t.Fatalf("ketchd stopped serving: %v", err)
			}
		})
	}
	if n := len(d.list(t)); n != 0 {
		t.Errorf("%d images after only failed pulls", n)
	}
}

// TestPullCorruptBlob: a registry that serves a layer whose bytes do not
// match its digest fails the pull with DataLoss and leaves nothing; a later
// pull from a good registry succeeds.
func TestPullCorruptBlob(t *testing.T) {
	d := startKetchd(t, daemonOpts{})
	bad := newProxy(t, func(p *proxy) { p.corrupt = true })
	before := d.files(t)
	_, err := d.pull(t, bad.host+"/ketch-test/multilayer:5", nil)
	if status.Code(err) != codes.DataLoss {
		t.Fatalf("pull of a corrupt blob = %v, want DataLoss", err)
	}
	if after := d.files(t); after != before {
		t.Errorf("failed pull left files: before %+v after %+v", before, after)
	}
	if n := len(d.list(t)); n != 0 {
		t.Errorf("%d images after a failed pull", n)
	}
	d.mustPull(t, multilayer)
}

// TestPullAbandoned: a pull past its deadline, or cancelled by its caller,
// stops; what it had downloaded is removed, and the next pull works.
func TestPullAbandoned(t *testing.T) {
	d := startKetchd(t, daemonOpts{})
	slow := newProxy(t, func(p *proxy) { p.delay = 3 * time.Second })
	for _, tc := range []struct {
		desc string
		ctx  func() (context.Context, context.CancelFunc)
		want codes.Code
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), time.Second)
		}, codes.DeadlineExceeded},
		{"cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(time.Second, cancel)
			return ctx, cancel
		}, codes.Canceled},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			before := d.files(t)
			ctx, cancel := tc.ctx()
			defer cancel()
			_, err := d.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec(slow.host + "/ketch-test/multilayer:5")})
			if status.Code(err) != tc.want {
				t.Fatalf("abandoned pull = %v, want %v", err, tc.want)
			}
			// The client gives up at once; ketchd undoes the pull just after.
			d.waitFiles(t, before)
			if n := len(d.list(t)); n != 0 {
				t.Errorf("%d images after an abandoned pull", n)
			}
		})
	}
	d.mustPull(t, multilayer)
}

// TestConcurrentPulls: callers pulling one image share one download, and
// layers download in parallel up to the configured bound.
func TestConcurrentPulls(t *testing.T) {
	d := startKetchd(t, daemonOpts{maxDownloads: 2})
	p := newProxy(t, func(p *proxy) { p.delay = 200 * time.Millisecond })
	ref := p.host + "/ketch-test/multilayer:5"
	var wg sync.WaitGroup
	ids := make([]string, 6)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := d.pull(t, ref, nil)
			if err != nil {
				t.Errorf("pull %d: %v", i, err)
			}
			ids[i] = id
		}()
	}
	wg.Wait()
	gets, maxInFlight := p.counts()
	for blob, n := range gets {
		if n != 1 {
			t.Errorf("blob %s downloaded %d times", blob, n)
		}
	}
	if len(gets) < 6 { // five layers and the config
		t.Errorf("%d blobs downloaded, want at least 6", len(gets))
	}
	if maxInFlight != 2 {
		t.Errorf("at most %d blob downloads at once, want 2 (max_concurrent_downloads)", maxInFlight)
	}
	if ids[0] == "" || slices.ContainsFunc(ids, func(s string) bool { return s != ids[0] }) {
		t.Errorf("callers got different image IDs: %v", ids)
	}
}

// TestRemoveImage: one remove by any name takes every tag; removal is
// idempotent and safe when racing itself; the disk is given back.
func TestRemoveImage(t *testing.T) {
	d := startKetchd(t, daemonOpts{})
	const tags = "gcr.io/k8s-staging-cri-tools/test-image-tags:"
	empty := d.files(t)
	var id string
	for _, tag := range []string{"1", "2", "3"} {
		id = d.mustPull(t, tags+tag)
	}
	img := d.status(t, id)
	if want := []string{tags + "1", tags + "2", tags + "3"}; !slices.Equal(img.RepoTags, want) {
		t.Fatalf("tags = %v, want %v", img.RepoTags, want)
	}
	used := d.fsUsed(t)
	if used == 0 {
		t.Fatal("ImageFsInfo reports 0 bytes with an image pulled")
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := d.img.RemoveImage(ctxT(t, 30*time.Second), &runtimeapi.RemoveImageRequest{Image: spec(tags + "2")}); err != nil {
				t.Errorf("concurrent remove: %v", err)
			}
		}()
	}
	wg.Wait()
	for _, ref := range []string{id, tags + "1", tags + "3"} {
		if img := d.status(t, ref); img != nil {
			t.Errorf("status %s after remove = %+v", ref, img)
		}
	}
	if n := len(d.list(t)); n != 0 {
		t.Errorf("%d images listed after remove", n)
	}
	if after := d.files(t); after != empty {
		t.Errorf("store after remove %+v, want %+v as before the pull", after, empty)
	}
	if now := d.fsUsed(t); now >= used {
		t.Errorf("ImageFsInfo %d bytes after remove, %d before", now, used)
	}
	d.remove(t, id) // again: idempotent
	d.mustPull(t, tags+"1")
}

// TestImagesSurviveRestart: a restarted ketchd lists the images it had.
func TestImagesSurviveRestart(t *testing.T) {
	d := startKetchd(t, daemonOpts{})
	id := d.mustPull(t, busybox)
	d.stop(t)
	d2 := restart(t, d)
	if img := d2.status(t, busybox); img.GetId() != id {
		t.Fatalf("after restart status = %+v, want %s", img, id)
	}
}

func (d *daemon) fsUsed(tb testing.TB) uint64 {
	tb.Helper()
	resp, err := d.img.ImageFsInfo(ctxT(tb, 30*time.Second), &runtimeapi.ImageFsInfoRequest{})
	if err != nil {
		tb.Fatal(err)
	}
	fs := resp.GetImageFilesystems()
	if len(fs) != 1 || fs[0].GetInodesUsed().GetValue() == 0 || fs[0].GetFsId().GetMountpoint() == "" {
		tb.Fatalf("ImageFsInfo = %+v", resp)
	}
	return fs[0].GetUsedBytes().GetValue()
}

// TestListImagesFilter: a filter names one image.
func TestListImagesFilter(t *testing.T) {
	d := startKetchd(t, daemonOpts{})
	id := d.mustPull(t, busybox)
	d.mustPull(t, multilayer)
	for _, tc := range []struct {
		desc, filter string
		want         []string
	}{
		{"by tag", busybox, []string{id}},
		{"by id", id, []string{id}},
		{"missing", registry + "/nothing:1", nil},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			resp, err := d.img.ListImages(ctxT(t, 10*time.Second), &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{Image: spec(tc.filter)}})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, i := range resp.Images {
				got = append(got, i.Id)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("filter %q = %v, want %v", tc.filter, got, tc.want)
			}
		})
	}
	if n := len(d.list(t)); n != 2 {
		t.Errorf("unfiltered list has %d images, want 2", n)
	}
}

// TestPullStalls: a registry that stops sending fails the pull after the
// progress timeout, though the caller would wait longer, and leaves nothing.
func TestPullStalls(t *testing.T) {
	d := startKetchd(t, daemonOpts{pullProgressTimeout: "2s"})
	stalled := newProxy(t, func(p *proxy) { p.delay = time.Minute })
	before := d.files(t)
	start := time.Now()
	_, err := d.img.PullImage(ctxT(t, 2*time.Minute), &runtimeapi.PullImageRequest{Image: spec(stalled.host + "/ketch-test/multilayer:5")})
	if status.Code(err) != codes.DeadlineExceeded || time.Since(start) > 50*time.Second {
		t.Fatalf("stalled pull = %v after %v, want DeadlineExceeded at the progress timeout", err, time.Since(start))
	}
	d.waitFiles(t, before)
}

// TestRegistryTokenScope: a registry token without a server address goes
// to the image's registry only: not to the blob store that registry
// redirects to, and not to a mirror the node's hosts.toml names.
func TestRegistryTokenScope(t *testing.T) {
	cdn := newProxy(t, nil)
	reg := newProxy(t, func(p *proxy) { p.bearer, p.redirect = true, cdn.host })
	mirror := newProxy(t, nil)
	hosts := t.TempDir()
	conf := fmt.Sprintf("server = %q\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+mirror.host, "http://"+mirror.host)
	if err := os.MkdirAll(filepath.Join(hosts, "mirrored.test"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hosts, "mirrored.test", "hosts.toml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startKetchd(t, daemonOpts{hostsDir: hosts})
	token := &runtimeapi.AuthConfig{RegistryToken: "good-token"}
	if _, err := d.pull(t, reg.host+"/e2e-test-images/busybox:1.29-2", token); err != nil {
		t.Fatalf("pull with the registry's token: %v", err)
	}
	if _, err := d.pull(t, "mirrored.test/e2e-test-images/busybox:1.29-2", token); err != nil {
		t.Fatalf("pull through a mirror: %v", err)
	}
	if len(reg.authorizations()) == 0 {
		t.Error("the registry never got the token")
	}
	for name, p := range map[string]*proxy{"the blob store the registry redirects to": cdn, "a mirror": mirror} {
		if a := p.authorizations(); len(a) > 0 {
			t.Errorf("%s got Authorization headers %q", name, a)
		}
	}
}

// TestWhiteouts: a layer's whiteout deletes a file of the layers below it
// and an opaque directory hides theirs, also with the layers unpacked in
// parallel (each applied apart from its parent, rebased at commit).
func TestWhiteouts(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	img := d.mustPull(t, registry+"/ketch-test/whiteout:1")
	pod, podCfg, logs := d.podWithLogs(t, "whiteouts")
	cfg := containerConfig("ls", "sh", "-c", "ls /data /opq")
	cfg.Image = spec(img)
	id := d.createContainer(t, pod, podCfg, cfg)
	d.startContainer(t, id)
	if st := d.waitExited(t, id, 30*time.Second); st.ExitCode != 0 {
		t.Fatalf("ls exited %d", st.ExitCode)
	}
	out := readLog(t, filepath.Join(logs, "ls.log"))
	for _, name := range []string{"kept", "new"} {
		if !strings.Contains(out, name) {
			t.Errorf("%s is missing: %q", name, out)
		}
	}
	for _, name := range []string{"gone", "old", ".wh."} {
		if strings.Contains(out, name) {
			t.Errorf("%s is there: %q", name, out)
		}
	}
}
