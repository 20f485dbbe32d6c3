package main

import (
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestListen: a stale socket is replaced; a file or a symlink at the path
// is left alone and refused; the socket is 0660 with the group asked for.
func TestListen(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chowns the socket")
	}
	for _, tc := range []struct {
		desc  string
		plant func(path string) error
		ok    bool
	}{
		{"nothing there", func(string) error { return nil }, true},
		{"stale socket", func(p string) error {
			l, err := net.Listen("unix", p)
			if err != nil {
				return err
			}
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			return l.Close()
		}, true},
		{"regular file", func(p string) error { return os.WriteFile(p, []byte("keep"), 0o600) }, false},
		{"symlink", func(p string) error { return os.Symlink("/etc/hostname", p) }, false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ketch.sock")
			if err := tc.plant(path); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Lstat(path)
			l, err := listen(path, 4242)
			if !tc.ok {
				after, _ := os.Lstat(path)
				if err == nil || after == nil || after.Mode() != before.Mode() {
					t.Errorf("listen over a %s: %v; it is now %v", tc.desc, err, after)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o660 || st.Uid != 0 || st.Gid != 4242 {
				t.Errorf("socket mode %v owner %d:%d, want 0660 0:4242", fi.Mode().Perm(), st.Uid, st.Gid)
			}
		})
	}
}
