package sandbox

import (
	"os"
	"path/filepath"
	"testing"
)

// Placement: the fullest shim with room takes a pod, a full or dead one
// none; a shim left with no pod is forgotten and its directory removed.
func TestShimPlacement(t *testing.T) {
	p := &shimPool{dir: t.TempDir(), perShim: 2, shims: map[string]*shimEntry{}, podShim: map[string]string{}}
	place := func(pod string) (string, bool) {
		e, launch := p.reserve(pod)
		if launch {
			close(e.ready)
			if err := os.Mkdir(p.shimDir(e.id), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		return e.id, launch
	}
	a, launchA := place("p1")
	if b, launch := place("p2"); !launchA || launch || b != a {
		t.Fatalf("two pods: shims %s (launched %v) and %s (launched %v), want one launched for both", a, launchA, b, launch)
	}
	b, launch := place("p3")
	if !launch || b == a {
		t.Fatalf("a third pod with 2 a shim went to %s (launched %v), want a new shim", b, launch)
	}
	p.leave("p1")
	p.leave("p1") // twice is once
	p.leave("p3")
	if _, ok := p.shims[b]; ok {
		t.Error("a shim left with no pod is still counted")
	}
	if _, err := os.Stat(p.shimDir(b)); !os.IsNotExist(err) {
		t.Errorf("the directory of a shim left with no pod: %v, want it removed", err)
	}
	if got, launch := place("p4"); launch || got != a || p.shims[a].pods != 2 {
		t.Errorf("p4 went to %s (launched %v), want %s, now with 2 pods (has %d)", got, launch, a, p.shims[a].pods)
	}
	p.leave("p4")
	p.shims[a].dead = true
	if got, launch := place("p5"); !launch || got == a {
		t.Errorf("with the only shim dead, p5 went to %s (launched %v), want a new one", got, launch)
	}
}

// A restarted ketchd counts each shim's pods from the pods' links.
func TestShimLoad(t *testing.T) {
	state := t.TempDir()
	pods := filepath.Join(state, "pods")
	p := &shimPool{dir: filepath.Join(state, "shims"), perShim: 4, shims: map[string]*shimEntry{}, podShim: map[string]string{}}
	for pod, shim := range map[string]string{"p1": "s1", "p2": "s1", "p3": "s2", "p4": ""} {
		if err := os.MkdirAll(filepath.Join(pods, pod), 0o700); err != nil {
			t.Fatal(err)
		}
		if shim != "" {
			if err := os.Symlink(p.shimDir(shim), filepath.Join(pods, pod, "shim")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := p.load(pods); err != nil {
		t.Fatal(err)
	}
	if len(p.shims) != 2 || p.shims["s1"].pods != 2 || p.shims["s2"].pods != 1 || len(p.podShim) != 3 {
		t.Fatalf("loaded %v, %v; want s1 with 2 pods and s2 with 1", p.shims, p.podShim)
	}
	// No shim runs in either directory: neither takes a pod.
	if e, launch := p.reserve("p5"); !launch || e.id == "s1" || e.id == "s2" {
		t.Errorf("a new pod went to %s (launched %v), want a new shim", e.id, launch)
	}
}
