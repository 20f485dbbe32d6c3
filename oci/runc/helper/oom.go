package helper

import (
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// clampOOMScoreAdj returns the value closest to want that this process may
// give a container. Without CAP_SYS_RESOURCE the kernel refuses to go
// below the value the helper inherited from its shim (EACCES), and
// libcontainer then fails with an unhelpful "can't get final child's PID
// from pipe: EOF" (node-facts.md).
func clampOOMScoreAdj(want int) (int, error) {
	lowest := -1000
	if !haveCapability(unix.CAP_SYS_RESOURCE) {
		data, err := os.ReadFile("/proc/self/oom_score_adj")
		if err != nil {
			return 0, fmt.Errorf("read own oom_score_adj: %w", err)
		}
		if lowest, err = strconv.Atoi(string(bytes.TrimSpace(data))); err != nil {
			return 0, fmt.Errorf("read own oom_score_adj: %w", err)
		}
	}
	return min(max(want, lowest), 1000), nil
}

func haveCapability(c int) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[c/32].Effective&(1<<(c%32)) != 0
}
