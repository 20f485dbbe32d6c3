//go:build e2e

package e2e

// The peer runtime side by side with ketch: Debian's containerd 1.6 + runc,
// configured like ketch in the tests (its own root, state and socket; the
// test pod network; the harness's registry mappings), for timings taken in
// the same run.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startContainerd starts containerd on a socket of the test's own and
// returns its CRI endpoint; it stops, and its state goes, when the test
// ends (after a cluster on it, which was started later, is down).
func startContainerd(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("containerd")
	if err != nil {
		t.Fatalf("containerd: %v (the peer runtime is Debian's containerd package; .ci/run installs it)", err)
	}
	dir, err := os.MkdirTemp("", "ketch-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	netd := filepath.Join(dir, "net.d")
	writePodNetwork(t, netd, filepath.Join(dir, "ipam"))
	sock := filepath.Join(dir, "containerd.sock")
	// restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE (node-facts.md).
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = "%[3]s.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "%[4]s/pause:3.9"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[5]q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %[6]q
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, registry, netd, filepath.Join(cacheDir, "certs.d"))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_, runDirBefore := os.Stat("/run/containerd")
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("containerd log (tail):\n%s", tail(string(b), 40))
		}
		unmountUnder(t, dir)
		os.RemoveAll(dir)
		// containerd 1.6 keeps its shims' sockets in /run/containerd/s whatever its state dir.
		if os.IsNotExist(runDirBefore) {
			os.RemoveAll("/run/containerd")
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return "unix://" + sock
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("containerd did not serve %s:\n%s", sock, tail(string(b), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
