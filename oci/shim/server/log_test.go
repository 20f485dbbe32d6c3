package server_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"ketch.dev/ketch/oci/shim/server"
)

// logEnv makes the test binary write 3 MiB of log lines through shim.Log,
// as a shim of long-lived pods would over time, on fds 1 and 2 of its own.
const logEnv = "KETCH_SHIM_TEST_LOG"

func TestMain(m *testing.M) {
	if path := os.Getenv(logEnv); path != "" {
		os.Exit(writeLog(path))
	}
	os.Exit(m.Run())
}

func writeLog(path string) int {
	l, err := server.OpenLog(path)
	if err != nil {
		return 1
	}
	line := strings.Repeat("x", 99) + "\n"
	for range 3 * server.MaxLog / len(line) {
		if _, err := l.Write([]byte(line)); err != nil {
			return 2
		}
	}
	fmt.Fprintln(os.Stderr, "last line")
	return 0
}

// TestLogIsCapped: the shim's log never holds much more than server.MaxLog,
// and what was written last is in it.
func TestLogIsCapped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shim.log")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), logEnv+"="+path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	cur, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.Stat(path + ".1")
	if err != nil {
		t.Fatal(err)
	}
	if len(cur) > server.MaxLog+200 || old.Size() > server.MaxLog+200 || !strings.HasSuffix(string(cur), "last line\n") {
		t.Errorf("log %d bytes (ending %q), old part %d bytes; want each at most %d", len(cur), cur[max(0, len(cur)-20):], old.Size(), server.MaxLog)
	}
}
