//go:build e2e

// Package e2e drives a real ketchd through its CRI socket, against the local
// registry test/setup.sh starts. It needs root; `make e2e` sets it up.
package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	registry     = "127.0.0.1:5000" // test/registry.sh, no auth
	authRegistry = "127.0.0.1:5001" // test/registry.sh, htpasswd Basic auth
	authUser     = "ketch"
	authPassword = "ketchpass"

	busybox      = registry + "/e2e-test-images/busybox:1.29-2"
	multilayer   = registry + "/ketch-test/multilayer:5"
	multilayer20 = registry + "/ketch-test/multilayer:20"
)

var (
	ketchdBin = os.Getenv("KETCHD")
	cacheDir  = envOr("KETCH_TEST_CACHE", "/var/cache/ketch-test")
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// envInt is a positive number from the environment, or def.
func envInt(k string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(k)); err == nil && n > 0 {
		return n
	}
	return def
}

// TestMain refuses to run without what the tests need rather than skipping:
// a skipped end-to-end suite would read as a pass.
func TestMain(m *testing.M) {
	if err := preflight(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v (run `make e2e`, which runs test/setup.sh first)\n", err)
		os.Exit(1)
	}
	unguard, err := guardPodNetwork()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	if left := suiteLeftovers(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "e2e: the suite left behind:\n  %s\n", strings.Join(left, "\n  "))
		code = 1
	}
	unguard()
	os.Exit(code)
}

// suiteLeftovers is whatever of ketch's is still on the host after every
// test has cleaned up: pod and container processes, cgroups under the test
// parent, mounts and netns pins of the tests' state directories, veths.
func suiteLeftovers() []string {
	var left []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !alive(pid) {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		ours := false
		for _, dir := range stateDirs.list() {
			ours = ours || bytes.Contains(cmdline, []byte(dir+"/"))
		}
		if strings.Contains(string(cg), cgroupParent+"/") || ours {
			left = append(left, fmt.Sprintf("process %d: %s", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
		}
	}
	for _, mnt := range cgroupMounts() {
		dirs, _ := filepath.Glob(filepath.Join(mnt, cgroupParent, "*", "cgroup.procs"))
		for _, d := range dirs {
			left = append(left, "cgroup "+filepath.Dir(d))
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		for _, dir := range stateDirs.list() {
			if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
				left = append(left, "mount "+f[4])
			}
		}
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", podBridge).Output(); len(bytes.TrimSpace(out)) > 0 {
		left = append(left, "veths on "+podBridge+": "+string(out))
	}
	return left
}

func preflight() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root")
	}
	if ketchdBin == "" {
		return fmt.Errorf("KETCHD must name the ketchd binary under test")
	}
	if _, err := os.Stat(ketchdBin); err != nil {
		return err
	}
	for _, r := range []string{registry, authRegistry} {
		c := http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get("http://" + r + "/v2/")
		if err != nil {
			return fmt.Errorf("test registry %s: %w", r, err)
		}
		resp.Body.Close()
	}
	return nil
}

// stateDirs are the state directories of every ketchd the suite started.
var stateDirs dirList

type dirList struct {
	mu   sync.Mutex
	dirs []string // guarded by mu
}

func (l *dirList) add(d string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dirs = append(l.dirs, d)
}

func (l *dirList) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.dirs...)
}
