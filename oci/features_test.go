package oci

import "testing"

// TestProbeFeatures: the probes agree with what the kernel says of itself
// (this project's hosts run 6.18 with user namespaces allowed).
func TestProbeFeatures(t *testing.T) {
	f := ProbeFeatures()
	if kernelAtLeast(5, 12) != f.RecursiveReadOnlyMounts {
		t.Errorf("recursive read-only mounts %v on a kernel at least 5.12: %v", f.RecursiveReadOnlyMounts, kernelAtLeast(5, 12))
	}
	if want := kernelAtLeast(5, 19) && userNamespacesAllowed(); f.UserNamespaces != want {
		t.Errorf("user namespaces %v, want %v", f.UserNamespaces, want)
	}
	if kernelAtLeast(99, 0) || !kernelAtLeast(2, 6) {
		t.Error("kernel version comparison")
	}
}
