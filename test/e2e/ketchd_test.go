//go:build e2e

package e2e

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// daemon is one ketchd under test, with its own socket and state.
type daemon struct {
	cmd     *exec.Cmd
	log     *syncBuffer // ketchd's stdout and stderr
	dir     string
	cfgPath string
	root    string
	socket  string
	state   string // short: shim socket paths must fit in 108 bytes
	rt      runtimeapi.RuntimeServiceClient
	img     runtimeapi.ImageServiceClient
	conn    *grpc.ClientConn
	stopped bool
}

// syncBuffer is a ketchd's output, written by exec's copying goroutine
// while a test reads it.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// head is s's first n lines.
func (s *syncBuffer) head(n int) string {
	l := strings.SplitN(s.String(), "\n", n+1)
	return strings.Join(l[:min(n, len(l))], "\n")
}

// last is s's last n lines that hold word.
func (s *syncBuffer) last(word string, n int) string {
	var found []string
	for _, l := range strings.Split(s.String(), "\n") {
		if strings.Contains(l, word) {
			found = append(found, l)
		}
	}
	return strings.Join(found[max(0, len(found)-n):], "\n")
}

type daemonOpts struct {
	hostsDir     string // registry hosts.toml root; the harness's by default
	maxDownloads int    // image.max_concurrent_downloads; the default when 0
	// pullProgressTimeout is image.pull_progress_timeout; the default when "".
	pullProgressTimeout string
	// network installs the test pod network (podnet_test.go) as the CNI
	// config; without it pods cannot be networked.
	network bool
	extra   string // appended to the config file
	// logFormat is log_format; text when "".
	logFormat string
	// statsPeriod is stats_period; the default when "".
	statsPeriod string
	// podsPerShim is sandbox.pods_per_shim; the default when 0.
	podsPerShim int
}

// startKetchd starts a ketchd on a temporary socket and state dir and stops it
// (by its PID) and removes its state when the test ends.
func startKetchd(tb testing.TB, o daemonOpts) *daemon {
	tb.Helper()
	dir := tb.TempDir()
	// As /var/lib and /run are on a node: others may pass (pods with a user
	// namespace reach their rootfs as others), which ketchd checks and
	// leaves to whoever made the directories above its own.
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o711); err != nil {
			tb.Fatal(err)
		}
	}
	if o.maxDownloads == 0 {
		o.maxDownloads = 3
	}
	if o.hostsDir == "" {
		o.hostsDir = filepath.Join(cacheDir, "certs.d")
	}
	state, err := os.MkdirTemp("", "k")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(state) })
	stateDirs.add(state)
	d := &daemon{
		root:   filepath.Join(dir, "root"),
		socket: filepath.Join(dir, "ketch.sock"),
		state:  state,
		log:    &syncBuffer{},
	}
	progress := ""
	if o.pullProgressTimeout != "" {
		progress = fmt.Sprintf("pull_progress_timeout = %q", o.pullProgressTimeout)
	}
	perShim := ""
	if o.podsPerShim != 0 {
		perShim = fmt.Sprintf("pods_per_shim = %d", o.podsPerShim)
	}
	netd := filepath.Join(dir, "net.d")
	if o.network {
		writePodNetwork(tb, netd, filepath.Join(dir, "ipam"))
	}
	cfg := fmt.Sprintf(`socket = %q
root = %q
state = %q
log_level = "debug"
log_format = %q
metrics_address = "127.0.0.1:0"
stats_period = %q
[image]
registry_config_path = %q
max_concurrent_downloads = %d
%s
[network]
cni_conf_dir = %q
%s
[sandbox]
cgroup_parent = %q
%s
`, d.socket, d.root, state, cmp.Or(o.logFormat, "text"), cmp.Or(o.statsPeriod, "10s"), o.hostsDir, o.maxDownloads, progress, netd, o.extra, cgroupParent, perShim)
	d.dir = dir
	d.cfgPath = filepath.Join(dir, "config.toml")
	if err := os.WriteFile(d.cfgPath, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	d.launch(tb)
	return d
}

// restart starts a new ketchd over the state of a stopped one.
func restart(tb testing.TB, old *daemon) *daemon {
	tb.Helper()
	d := &daemon{dir: old.dir, cfgPath: old.cfgPath, root: old.root, socket: old.socket, state: old.state, log: &syncBuffer{}}
	d.launch(tb)
	return d
}

func (d *daemon) launch(tb testing.TB) {
	tb.Helper()
	d.cmd = exec.Command(ketchdBin, "--config", d.cfgPath)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		d.removeAllPods(tb)
		d.stop(tb)
		if tb.Failed() {
			tb.Logf("ketchd log:\n%s", d.log)
		}
		unmountUnder(tb, d.dir)
		unmountUnder(tb, d.state)
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", d.socket); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("ketchd did not serve its socket; log:\n%s", d.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.dial(tb)
}

// dial connects the CRI clients to d.socket.
func (d *daemon) dial(tb testing.TB) {
	// kubelet receives up to 16 MiB a message; so does the tests' client.
	conn, err := grpc.NewClient("unix://"+d.socket, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		tb.Fatal(err)
	}
	d.conn = conn
	d.rt = runtimeapi.NewRuntimeServiceClient(conn)
	d.img = runtimeapi.NewImageServiceClient(conn)
}

// stop sends TERM and waits; ketchd must exit 0.
func (d *daemon) stop(tb testing.TB) {
	if d.stopped {
		return
	}
	d.stopped = true
	if d.conn != nil {
		d.conn.Close()
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			tb.Errorf("ketchd exited with %v", err)
		}
	case <-time.After(15 * time.Second):
		_ = d.cmd.Process.Kill()
		<-done
		tb.Errorf("ketchd did not stop within 15s of TERM")
	}
}

// kill ends ketchd with kill -9, as a crash would.
func (d *daemon) kill(tb testing.TB) {
	tb.Helper()
	if err := d.cmd.Process.Kill(); err != nil {
		tb.Fatal(err)
	}
	_ = d.cmd.Wait()
	d.stopped = true
}

// unmountUnder removes any mount a failed test left below dir, so a failure
// does not leave the host holding ketch's mounts.
func unmountUnder(tb testing.TB, dir string) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- { // deepest first
		f := strings.Fields(lines[i])
		if len(f) < 2 || !strings.HasPrefix(f[1], dir) {
			continue
		}
		// The netns directory is a shared mount by design (as `ip netns`
		// makes /run/netns one); only what is inside it would be a leak.
		if f[1] != filepath.Join(dir, "netns") {
			tb.Errorf("mount left behind: %s", f[1])
		}
		_ = syscall.Unmount(f[1], syscall.MNT_DETACH)
	}
}

func ctxT(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
