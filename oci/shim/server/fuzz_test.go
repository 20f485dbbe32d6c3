package server

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
)

// FuzzOpenLogFile: whatever log path a request joins to the pod's log
// directory, and with a symlink planted in the directory, the log opened
// is a file inside the directory; anything else is refused, nothing is
// made outside it.
func FuzzOpenLogFile(f *testing.F) {
	for _, p := range []string{"app/0.log", "app.log", "../x.log", "planted/x.log", "planted", "a/../../b", "/abs", "", ".", "a//b/", "x\x00y"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, rel string) {
		base := t.TempDir()
		dir, outside := filepath.Join(base, "pod"), filepath.Join(base, "outside")
		for _, d := range []string{dir, outside} {
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		// What a container with a writable hostPath of the log
		// directory could plant.
		if err := os.Symlink(outside, filepath.Join(dir, "planted")); err != nil {
			t.Fatal(err)
		}
		// As cri joins it.
		fl, err := openLogFile(dir, filepath.Join(dir, rel))
		if err != nil {
			if !errdefs.IsInvalidArgument(err) && !errdefs.IsNotFound(err) {
				t.Fatalf("openLogFile(%q): %v, want InvalidArgument or NotFound", rel, err)
			}
		} else {
			name := fl.Name()
			fl.Close()
			fi, err := os.Lstat(name)
			if err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("openLogFile(%q) opened %s: %v %v", rel, name, fi, err)
			}
		}
		if ents, _ := os.ReadDir(outside); len(ents) > 0 {
			t.Fatalf("openLogFile(%q) made %s outside the log directory", rel, ents[0].Name())
		}
	})
}
