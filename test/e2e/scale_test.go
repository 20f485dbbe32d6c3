//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// threads is the number of OS threads of process pid.
func threads(tb testing.TB, pid int) int {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Fatalf("no Threads line in /proc/%d/status", pid)
	return 0
}

// TestThreadsFlatInPods: ketchd holds no OS thread per pod. Go keeps the
// threads it once made, so the pods are started one at a time after a few
// have warmed ketchd up: any growth then is per pod (it was one thread each
// while ketchd waited for every shim in waitid).
func TestThreadsFlatInPods(t *testing.T) {
	const warm, more = 5, 25
	d := startKetchd(t, daemonOpts{network: true})
	var ids []string
	defer func() {
		for _, id := range ids {
			d.stopPod(t, id)
			d.removePod(t, id)
		}
	}()
	pid := d.cmd.Process.Pid
	idle := threads(t, pid)
	var warmed int
	for i := range warm + more {
		if i == warm {
			warmed = threads(t, pid)
		}
		ids = append(ids, d.runPod(t, podConfig(t, fmt.Sprintf("threads-%d", i))))
	}
	after := threads(t, pid)
	t.Logf("ketchd threads: idle %d, with %d pods %d, with %d pods %d", idle, warm, warmed, warm+more, after)
	if after-warmed >= more/2 {
		t.Errorf("ketchd grew %d threads for %d more pods", after-warmed, more)
	}
}
