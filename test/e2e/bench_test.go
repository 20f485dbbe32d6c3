//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	_ "crypto/sha256" // go-digest needs the algorithm registered
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// BenchmarkPullImage pulls a five-layer image (5 × 2 MiB) from the local
// registry: cold (nothing in the store; the image is removed between runs)
// and warm (already pulled: resolve and verify only).
func BenchmarkPullImage(b *testing.B) {
	d := startKetchd(b, daemonOpts{})
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			id := d.mustPull(b, multilayer)
			b.StopTimer()
			d.remove(b, id)
			b.StartTimer()
		}
	})
	b.Run("warm", func(b *testing.B) {
		d.mustPull(b, multilayer)
		for b.Loop() {
			d.mustPull(b, multilayer)
		}
	})
}

// BenchmarkImageQueries: ImageStatus and ListImages with 200 images stored.
func BenchmarkImageQueries(b *testing.B) {
	const n = 200
	refs := pushManyImages(b, n)
	d := startKetchd(b, daemonOpts{})
	for _, ref := range refs {
		d.mustPull(b, ref)
	}
	if got := len(d.list(b)); got != n {
		b.Fatalf("%d images stored, want %d", got, n)
	}
	b.Run("ImageStatus", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if d.status(b, refs[i%n]) == nil {
				b.Fatal("image missing")
			}
			i++
		}
	})
	b.Run("ListImages", func(b *testing.B) {
		for b.Loop() {
			d.list(b)
		}
	})
}

// pushManyImages pushes n distinct small images (one shared layer, a config
// label each) to the test registry as ketch-test/many:<i>, through the
// registry's HTTP API.
func pushManyImages(tb testing.TB, n int) []string {
	tb.Helper()
	const repo = "ketch-test/many"
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	content := []byte("ketch benchmark layer\n")
	_ = tw.WriteHeader(&tar.Header{Name: "bench.txt", Mode: 0o644, Size: int64(len(content)), ModTime: time.Unix(0, 0)})
	_, _ = tw.Write(content)
	_ = tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(raw.Bytes())
	_ = zw.Close()
	layer := pushBlob(tb, repo, gz.Bytes(), ocispec.MediaTypeImageLayerGzip)
	diffID := digest.FromBytes(raw.Bytes())

	refs := make([]string, n)
	for i := range refs {
		cfg, _ := json.Marshal(ocispec.Image{
			Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
			Config:   ocispec.ImageConfig{Labels: map[string]string{"ketch.dev/bench": fmt.Sprint(i)}},
			RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
		})
		m := ocispec.Manifest{
			MediaType: ocispec.MediaTypeImageManifest,
			Config:    pushBlob(tb, repo, cfg, ocispec.MediaTypeImageConfig),
			Layers:    []ocispec.Descriptor{layer},
		}
		m.SchemaVersion = 2
		body, _ := json.Marshal(m)
		tag := fmt.Sprint(i)
		req, _ := http.NewRequest(http.MethodPut, "http://"+registry+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(body))
		req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
		mustDo(tb, req, http.StatusCreated)
		refs[i] = registry + "/" + repo + ":" + tag
	}
	return refs
}

func pushBlob(tb testing.TB, repo string, blob []byte, mediaType string) ocispec.Descriptor {
	tb.Helper()
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	req, _ := http.NewRequest(http.MethodPost, "http://"+registry+"/v2/"+repo+"/blobs/uploads/", nil)
	resp := mustDo(tb, req, http.StatusAccepted)
	loc, err := resp.Location()
	if err != nil {
		tb.Fatal(err)
	}
	q := loc.Query()
	q.Set("digest", desc.Digest.String())
	loc.RawQuery = q.Encode()
	req, _ = http.NewRequest(http.MethodPut, loc.String(), bytes.NewReader(blob))
	req.Header.Set("Content-Type", "application/octet-stream")
	mustDo(tb, req, http.StatusCreated)
	return desc
}

func mustDo(tb testing.TB, req *http.Request, want int) *http.Response {
	tb.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		tb.Fatalf("%s %s: %s: %s", req.Method, req.URL, resp.Status, body)
	}
	return resp
}
