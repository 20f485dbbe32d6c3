package image

import (
	"testing"

	"github.com/containerd/errdefs"
)

// FuzzNormalize: every reference a client sends either normalizes or is
// InvalidArgument, and a normalized reference is a fixed point, since
// image records are looked up by it again.
func FuzzNormalize(f *testing.F) {
	for _, ref := range []string{
		"busybox",                          // crictl pull busybox
		"busybox:1.36",                     // a short name with a tag
		"docker.io/library/busybox:latest", // kubelet, after its own normalizing
		"registry.k8s.io/pause:3.10",
		"127.0.0.1:5000/e2e-test-images/busybox:1.29-2", // the test registry
		"[::1]:5000/app:v1",
		"registry.k8s.io/pause:3.9@sha256:" + sixtyFour, // tag and digest
		"quay.io/org/app@sha256:" + sixtyFour,
		"sha256:" + sixtyFour, // an image ID, as crictl rmi sends it
		"Busybox",
		"busybox::1",
		"",
	} {
		f.Add(ref)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		got, err := Normalize(ref)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("Normalize(%q): %v, want an InvalidArgument error", ref, err)
			}
			return
		}
		again, err := Normalize(got)
		if err != nil || again != got {
			t.Fatalf("Normalize(%q) = %q, which normalizes to %q, %v", ref, got, again, err)
		}
	})
}
