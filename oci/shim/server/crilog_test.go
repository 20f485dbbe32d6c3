package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCRILogFormat(t *testing.T) {
	long := strings.Repeat("x", maxLogLine+10)
	for _, tc := range []struct {
		desc, in string
		want     []string // "<tag> <line>" per entry
	}{
		{"lines", "one\ntwo\n", []string{"F one", "F two"}},
		{"empty line", "\n", []string{"F "}},
		{"no trailing newline", "one\ntwo", []string{"F one", "F two"}},
		{"long line is cut into partials", long + "\n", []string{"P " + long[:maxLogLine], "F " + long[maxLogLine:]}},
		{"nothing", "", nil},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "sub", "0.log")
			l, err := openCRILog(dir, path)
			if err != nil {
				t.Fatal(err)
			}
			w := lines{log: l, stream: "stdout"}
			// In pieces of 7 bytes, as reads may cut it.
			for in := tc.in; in != ""; in = in[min(7, len(in)):] {
				w.write([]byte(in[:min(7, len(in))]))
			}
			w.end()
			l.close()
			data, _ := os.ReadFile(path)
			lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
			if len(tc.want) == 0 {
				if len(data) != 0 {
					t.Errorf("log = %q, want empty", data)
				}
				return
			}
			if len(lines) != len(tc.want) {
				t.Fatalf("log has %d entries, want %d:\n%s", len(lines), len(tc.want), data)
			}
			for i, line := range lines {
				ts, rest, _ := strings.Cut(line, " ")
				if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
					t.Errorf("entry %d: timestamp %q: %v", i, ts, err)
				}
				if rest != "stdout "+tc.want[i] {
					t.Errorf("entry %d = %.60q, want %.60q", i, rest, "stdout "+tc.want[i])
				}
			}
		})
	}
}

func TestCRILogReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "0.log")
	l, err := openCRILog(dir, path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	l.entry("stdout", false, []byte("before"))
	if err := os.Rename(path, path+".1"); err != nil { // kubelet's rotation
		t.Fatal(err)
	}
	if err := l.reopen(); err != nil {
		t.Fatal(err)
	}
	l.entry("stderr", false, []byte("after"))
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if !strings.HasSuffix(string(old), " stdout F before\n") || !strings.HasSuffix(string(cur), " stderr F after\n") {
		t.Errorf("rotated %q, current %q", old, cur)
	}
}

// TestCRILogStaysInside: neither a path out of the log directory nor a
// symlink planted in it (at the file or a directory on the way, at open or
// at a rotation's reopen) gets the shim to write outside it.
func TestCRILogStaysInside(t *testing.T) {
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		desc  string
		plant func(dir string) // what an attacker put in the log directory
		path  string           // relative to the log directory
	}{
		{"dot-dot", func(string) {}, "../x.log"},
		{"symlinked file", func(dir string) { os.Symlink(victim, filepath.Join(dir, "0.log")) }, "0.log"},
		{"symlinked directory", func(dir string) { os.Symlink(outside, filepath.Join(dir, "ctr")) }, "ctr/victim"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			dir := t.TempDir()
			tc.plant(dir)
			if l, err := openCRILog(dir, filepath.Join(dir, tc.path)); err == nil {
				l.entry("stdout", false, []byte("escaped"))
				l.close()
				t.Error("opened")
			}
		})
	}
	t.Run("symlink planted before a reopen", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "0.log")
		l, err := openCRILog(dir, path)
		if err != nil {
			t.Fatal(err)
		}
		defer l.close()
		os.Rename(path, path+".1")
		os.Symlink(victim, path)
		if err := l.reopen(); err == nil {
			t.Error("reopened through a symlink")
		}
	})
	if b, _ := os.ReadFile(victim); string(b) != "untouched" {
		t.Errorf("the file outside was written: %q", b)
	}
}
