//go:build e2e

package e2e

// The peer runtimes, side by side with ketch: Debian's containerd 1.6 + runc,
// and CRI-O 1.36 (test/crio.sh) with Debian's conmon and runc, each
// configured like ketch in the tests (its own root, state and socket; the
// test pod network; the harness's registry mappings), for figures taken in
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

// peer is a runtime started for a test.
type peer struct {
	endpoint string // its CRI endpoint
	dir      string // holds all its state; in the command line of each of its per-pod processes
	pid      int    // its daemon's
}

// startContainerd starts containerd on a socket of the test's own; it
// stops, and its state goes, when the test ends (after a cluster on it,
// which was started later, is down).
func startContainerd(tb testing.TB) peer {
	tb.Helper()
	bin, err := exec.LookPath("containerd")
	if err != nil {
		tb.Fatalf("containerd: %v (the peer runtime is Debian's containerd package; .ci/run installs it)", err)
	}
	dir := peerDir(tb, "ketch-ctrd-")
	netd := filepath.Join(dir, "net.d")
	writePodNetwork(tb, netd, filepath.Join(dir, "ipam"))
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
		tb.Fatal(err)
	}
	// containerd 1.6 keeps its shims' sockets in /run/containerd/s whatever its state dir.
	_, runDirBefore := os.Stat("/run/containerd")
	return startPeer(tb, "containerd", dir, sock, exec.Command(bin, "--config", cfgPath), func() {
		if os.IsNotExist(runDirBefore) {
			os.RemoveAll("/run/containerd")
		}
	})
}

// crioVersion is the CRI-O test/crio.sh builds.
const crioVersion = "v1.36.3"

// startCRIO starts CRI-O as startContainerd starts containerd. Every path
// CRI-O and its libraries default outside their root and run root (the
// netns pins, runc's state, exits, attach sockets, auth, the blob cache,
// its registries and storage configuration) is set to one below dir.
func startCRIO(tb testing.TB) peer {
	tb.Helper()
	bins := filepath.Join(cacheDir, "crio-"+crioVersion)
	for _, p := range []string{filepath.Join(bins, "crio"), "/usr/bin/conmon", "/usr/sbin/runc"} {
		if _, err := os.Stat(p); err != nil {
			tb.Fatalf("CRI-O: %v (test/crio.sh builds CRI-O; conmon and runc are Debian's packages, in test/setup.sh's list)", err)
		}
	}
	dir := peerDir(tb, "ketch-crio-")
	netd := filepath.Join(dir, "net.d")
	writePodNetwork(tb, netd, filepath.Join(dir, "ipam"))
	sock := filepath.Join(dir, "crio.sock")
	at := func(p string) string { return filepath.Join(dir, p) }
	cfg := fmt.Sprintf(`[crio]
root = %q
runroot = %q
storage_driver = "overlay"
log_dir = %q
version_file = %q
version_file_persist = %q
clean_shutdown_file = %q
[crio.api]
listen = %q
stream_address = "127.0.0.1"
stream_port = "0"
[crio.runtime]
default_runtime = "runc"
cgroup_manager = "cgroupfs"
decryption_keys_path = %q
irqbalance_config_file = %q
irqbalance_config_restore_file = ""
pinns_path = %q
namespaces_dir = %q
container_exits_dir = %q
container_attach_socket_dir = %q
[crio.runtime.runtimes.runc]
runtime_path = "/usr/sbin/runc"
runtime_root = %q
monitor_path = "/usr/bin/conmon"
monitor_cgroup = "pod"
[crio.image]
pause_image = "%s/pause:3.9"
signature_policy = %q
global_auth_file = ""
big_files_temporary_dir = %q
[crio.network]
network_dir = %q
plugin_dirs = ["/usr/lib/cni"]
[crio.metrics]
enable_metrics = false
[crio.nri]
enable_nri = false
`, at("root"), at("run"), at("pod-logs"), at("run/version"), at("root/version"), at("root/clean.shutdown"),
		sock, at("keys"), at("irqbalance"), filepath.Join(bins, "pinns"), at("ns"), at("exits"), at("attach"), at("runc"),
		registry, at("policy.json"), at("tmp"), netd)
	files := map[string]string{
		"crio.conf":               cfg,
		"policy.json":             `{"default": [{"type": "insecureAcceptAnything"}]}`,
		"registries.conf":         crioRegistries(tb),
		"storage.conf":            fmt.Sprintf("[storage]\ndriver = \"overlay\"\ngraphroot = %q\nrunroot = %q\n", at("root"), at("run")),
		"crio.conf.d/.keep":       "",
		"tmp/.keep":               "",
		"registries.conf.d/.keep": "",
	}
	for name, content := range files {
		if err := os.MkdirAll(filepath.Dir(at(name)), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(at(name), []byte(content), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	cmd := exec.Command(filepath.Join(bins, "crio"), "--config", at("crio.conf"), "--config-dir", at("crio.conf.d"),
		"--registries-conf", at("registries.conf"), "--registries-conf-dir", at("registries.conf.d"))
	cmd.Env = append(os.Environ(),
		"CONTAINERS_STORAGE_CONF="+at("storage.conf"),
		"REGISTRY_AUTH_FILE="+at("auth.json"),
		"TMPDIR="+at("tmp"))
	return startPeer(tb, "crio", dir, sock, cmd, func() {})
}

// crioRegistries maps each registry host the harness serves locally
// (test/hosts.sh's hosts.toml files) to the local registry, as ketch and
// containerd see them.
func crioRegistries(tb testing.TB) string {
	hosts, err := os.ReadDir(filepath.Join(cacheDir, "certs.d"))
	if err != nil {
		tb.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("unqualified-search-registries = [\"docker.io\"]\n")
	for _, h := range hosts {
		fmt.Fprintf(&b, "[[registry]]\nprefix = %q\nlocation = %q\ninsecure = true\n", h.Name(), registry)
	}
	return b.String()
}

// peerDir is a fresh directory for a peer's state.
func peerDir(tb testing.TB, prefix string) string {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		tb.Fatal(err)
	}
	return dir
}

// startPeer starts a peer's daemon, logging to dir, and waits until it
// serves sock. When the test ends it is stopped and dir, with any mount
// left below it, removed; then cleanup runs.
func startPeer(tb testing.TB, name, dir, sock string, cmd *exec.Cmd, cleanup func()) peer {
	tb.Helper()
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		// Pods outlive their runtime's daemon (as ketch's do).
		d := &daemon{socket: sock}
		d.dial(tb)
		d.removeAllPods(tb)
		d.conn.Close()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if tb.Failed() {
			b, _ := os.ReadFile(log.Name())
			tb.Logf("%s log (tail):\n%s", name, tail(string(b), 40))
		}
		unmountUnder(tb, dir)
		os.RemoveAll(dir)
		cleanup()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return peer{endpoint: "unix://" + sock, dir: dir, pid: cmd.Process.Pid}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			tb.Fatalf("%s did not serve %s:\n%s", name, sock, tail(string(b), 40))
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
