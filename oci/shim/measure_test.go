package shim_test

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMeasure reports what a pod's shim costs: StartSandbox latency over
// 20 pods, each on a fresh shim as ketchd runs them, and the memory of a
// shim and its ketch-init, alone and with 20 pods running (the shims share
// their binary's pages, so PSS per pod falls as pods are added). It asserts
// nothing: the figures go to the log (go test -v -run Measure).
func TestMeasure(t *testing.T) {
	needRoot(t)
	if testing.Short() {
		t.Skip("measurement")
	}
	const runs = 20
	var took []time.Duration
	var shims, inits []int
	for i := range runs {
		p := newPod(t)
		c := p.launch(t)
		start := time.Now()
		pid, err := c.StartSandbox(ctx(t), p.config())
		if err != nil {
			t.Fatal(err)
		}
		took = append(took, time.Since(start))
		shims, inits = append(shims, p.shimPid), append(inits, pid)
		if i == 0 {
			// Let the Go runtimes settle after start-up before reading.
			time.Sleep(500 * time.Millisecond)
			logMemory(t, "1 pod", shims, inits)
		}
	}
	time.Sleep(500 * time.Millisecond)
	logMemory(t, fmt.Sprintf("%d pods", runs), shims, inits)
	slices.Sort(took)
	t.Logf("StartSandbox over %d pods: p50 %v, p90 %v, min %v, max %v", runs,
		took[runs/2].Round(100*time.Microsecond), took[runs*9/10].Round(100*time.Microsecond),
		took[0].Round(100*time.Microsecond), took[runs-1].Round(100*time.Microsecond))
	// newPod's clean-up shuts every shim down.
}

// logMemory logs the mean RSS and PSS of the shims and inits.
func logMemory(t *testing.T, what string, shims, inits []int) {
	t.Helper()
	mean := func(pids []int) (rss, pss float64) {
		for _, pid := range pids {
			r, p := memory(t, pid)
			rss, pss = rss+r, pss+p
		}
		return rss / float64(len(pids)), pss / float64(len(pids))
	}
	sr, sp := mean(shims)
	ir, ip := mean(inits)
	t.Logf("%s, per pod: shim RSS %.1f MiB PSS %.1f MiB; ketch-init RSS %.1f MiB PSS %.1f MiB; together RSS %.1f MiB PSS %.1f MiB",
		what, sr, sp, ir, ip, sr+ir, sp+ip)
}

// memory returns pid's RSS and PSS in MiB.
func memory(t *testing.T, pid int) (rss, pss float64) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "Rss:":
			rss = kb / 1024
		case "Pss:":
			pss = kb / 1024
		}
	}
	return rss, pss
}
