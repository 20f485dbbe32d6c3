package image

import (
	"context"
	"errors"
	"testing"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestLimitMetadata(t *testing.T) {
	for _, tc := range []struct {
		mediaType string
		size      int64
		ok        bool
	}{
		{ocispec.MediaTypeImageManifest, maxMetadata, true},
		{ocispec.MediaTypeImageManifest, maxMetadata + 1, false},
		{ocispec.MediaTypeImageIndex, 1 << 30, false},
		{ocispec.MediaTypeImageConfig, 64 << 20, false},
		{"application/vnd.docker.distribution.manifest.v2+json", 5 << 20, false},
		{ocispec.MediaTypeImageLayerGzip, 1 << 30, true}, // layers stream to disk
	} {
		_, err := limitMetadata(context.Background(), ocispec.Descriptor{MediaType: tc.mediaType, Size: tc.size})
		if tc.ok != (err == nil) || err != nil && !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s of %d bytes: %v", tc.mediaType, tc.size, err)
		}
	}
}

func TestRecoveredPull(t *testing.T) {
	_, err := recovered(context.Background(), func(context.Context) (Image, error) { panic("boom") })
	if !errdefs.IsInternal(err) {
		t.Errorf("a panicking pull: %v, want Internal", err)
	}
	want := errors.New("plain")
	if _, err := recovered(context.Background(), func(context.Context) (Image, error) { return Image{}, want }); err != want {
		t.Errorf("a failing pull: %v", err)
	}
}

func TestTokenHost(t *testing.T) {
	for _, tc := range []struct{ server, name, want string }{
		{"", "registry.example:5000/app:1", "registry.example:5000"},
		{"", "docker.io/library/busybox:1", "registry-1.docker.io"},
		{"https://other.example/v2/", "registry.example/app:1", "other.example"},
	} {
		if got := tokenHost(tc.server, tc.name); got != tc.want {
			t.Errorf("tokenHost(%q, %q) = %q, want %q", tc.server, tc.name, got, tc.want)
		}
	}
}
