//go:build e2e

// Package e2e drives a real ketchd through its CRI socket, against the local
// registry test/setup.sh starts. It needs root; `make e2e` sets it up.
package e2e

import (
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"
)

const (
	registry     = "127.0.0.1:5000" // test/registry.sh, no auth
	authRegistry = "127.0.0.1:5001" // test/registry.sh, htpasswd Basic auth
	authUser     = "ketch"
	authPassword = "ketchpass"

	busybox    = registry + "/e2e-test-images/busybox:1.29-2"
	multilayer = registry + "/ketch-test/multilayer:5"
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
	unguard()
	os.Exit(code)
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
