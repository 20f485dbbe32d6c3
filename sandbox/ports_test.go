package sandbox

import (
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// A host port is reserved on the address a pod asks for, of either family
// (an IPv6 one made bindPort panic; found by the CRI fuzzer).
func TestBindPort(t *testing.T) {
	for _, tc := range []struct {
		proto, hostIP string
		bad           bool
	}{
		{"TCP", "", false},
		{"UDP", "127.0.0.1", false},
		{"TCP", "::1", false},
		{"UDP", "::ffff:127.0.0.1", false},
		{"TCP", "999.1.1.1", true},
	} {
		fd, err := bindPort(tc.proto, tc.hostIP, 0)
		switch {
		case tc.bad && !errdefs.IsInvalidArgument(err):
			t.Errorf("bindPort(%s, %q): %v, want InvalidArgument", tc.proto, tc.hostIP, err)
		case !tc.bad && (err != nil || fd < 0):
			t.Errorf("bindPort(%s, %q) = %d, %v", tc.proto, tc.hostIP, fd, err)
		}
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}
