//go:build e2e

package e2e

// Fault isolation: what one container, probe or client does harms neither
// its neighbours nor its pod.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/streaming/pkg/httpstream"
)

// sleeperPod starts a ketchd on the test network and in it a pod running
// one container that sleeps; it returns them all.
func sleeperPod(t *testing.T, name string) (d *daemon, pod string, podCfg *runtimeapi.PodSandboxConfig, id string) {
	t.Helper()
	d = startKetchd(t, daemonOpts{network: true})
	d.mustPull(t, busybox)
	pod, podCfg, _ = d.podWithLogs(t, name)
	id = d.createContainer(t, pod, podCfg, containerConfig(name, "sleep", "300"))
	d.startContainer(t, id)
	return d, pod, podCfg, id
}

// TestBigOutputs: an exec that prints 5 MB and a container whose 5 MB of
// stdout is its result (at the largest result_cap) leave the pod and its
// containers running. The exec answers with its output capped; the result
// is recorded capped, with the container's own exit code.
func TestBigOutputs(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true, extra: "[workflow]\nresult_cap = 1048576\n"})
	d.mustPull(t, busybox)
	pod, podCfg, _ := d.podWithLogs(t, "big")
	a := d.createContainer(t, pod, podCfg, containerConfig("a", "sleep", "300"))
	d.startContainer(t, a)
	b := d.createContainer(t, pod, podCfg, containerConfig("b", "sleep", "300"))
	d.startContainer(t, b)

	resp, err := d.rt.ExecSync(ctxT(t, 30*time.Second), &runtimeapi.ExecSyncRequest{ContainerId: a, Cmd: []string{"sh", "-c", "head -c 5000000 /dev/zero; head -c 5000000 /dev/zero >&2"}, Timeout: 20})
	if err != nil {
		t.Fatalf("ExecSync of 5 MB a stream: %v", err)
	}
	if n, m := len(resp.Stdout), len(resp.Stderr); n == 0 || n >= 5000000 || m == 0 || m >= 5000000 || resp.ExitCode != 0 {
		t.Errorf("ExecSync of 5 MB a stream: %d bytes of stdout, %d of stderr, exit %d; want both capped, exit 0", n, m, resp.ExitCode)
	}

	cfg := containerConfig("result", "sh", "-c", "head -c 5000000 /dev/zero | tr '\\0' r; exit 3")
	cfg.Annotations = map[string]string{"ketch.dev/result": "stdout"}
	r := d.createContainer(t, pod, podCfg, cfg)
	d.startContainer(t, r)
	st := d.waitExited(t, r, 30*time.Second)
	if st.ExitCode != 3 || st.Reason != "Error" {
		t.Errorf("the result container exited %d %s, want its own 3", st.ExitCode, st.Reason)
	}
	sresp, err := d.rt.ContainerStatus(ctxT(t, 10*time.Second), &runtimeapi.ContainerStatusRequest{ContainerId: r, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Result          []byte `json:"result"`
		ResultTruncated bool   `json:"resultTruncated"`
	}
	if err := json.Unmarshal([]byte(sresp.Info["info"]), &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Result) != 1048576 || !info.ResultTruncated {
		t.Errorf("result of %d bytes (truncated %v), want the 1 MiB cap, truncated", len(info.Result), info.ResultTruncated)
	}

	// Nothing else was touched: the pod is ready, its other containers run
	// and answer.
	if ps, _ := d.podStatus(t, pod); ps.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("pod %v after the big outputs", ps.State)
	}
	for _, id := range []string{a, b} {
		if st := d.ctrStatus(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			t.Errorf("container %s: %v (%s) after the big outputs", st.Metadata.Name, st.State, st.Reason)
		}
		if out, code := d.exec(t, id, "echo", "still here"); out != "still here" || code != 0 {
			t.Errorf("exec after the big outputs: %q %d", out, code)
		}
	}
	d.removePod(t, pod)
	d.checkPodGone(t, pod)
}

// TestRequestPathsAndNames: a log path that leads out of the pod's log
// directory, a relative log directory, a log file replaced by a symlink
// (as a pod that mounts the log directory could plant one) and pod names
// that would inject CNI arguments or resolv.conf lines are refused, and
// leave nothing behind.
func TestRequestPathsAndNames(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	d.mustPull(t, busybox)
	for _, mutate := range []func(*runtimeapi.PodSandboxConfig){
		func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "relative/logs" },
		func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "web;IgnoreUnknown=0" },
		func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Uid = "u=1" },
		func(c *runtimeapi.PodSandboxConfig) {
			c.DnsConfig = &runtimeapi.DNSConfig{Searches: []string{"ok.example\nnameserver 6.6.6.6"}}
		},
	} {
		cfg := podConfig(t, "bad-names")
		mutate(cfg)
		if _, err := d.rt.RunPodSandbox(ctxT(t, 30*time.Second), &runtimeapi.RunPodSandboxRequest{Config: cfg}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("RunPodSandbox %v: %v, want InvalidArgument", cfg, err)
		}
	}
	d.checkNothingLeft(t)

	pod, podCfg, logs := d.podWithLogs(t, "logs")
	outside := t.TempDir()
	cfg := containerConfig("escape", "echo", "out")
	cfg.LogPath = "../" + filepath.Base(outside) + "/escape.log"
	if _, err := d.rt.CreateContainer(ctxT(t, 30*time.Second), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("log path %q: %v, want InvalidArgument", cfg.LogPath, err)
	}
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(logs, "planted.log")); err != nil {
		t.Fatal(err)
	}
	id := d.createContainer(t, pod, podCfg, containerConfig("planted", "echo", "escaped"))
	if _, err := d.rt.StartContainer(ctxT(t, 30*time.Second), &runtimeapi.StartContainerRequest{ContainerId: id}); err == nil {
		d.waitExited(t, id, 10*time.Second)
	}
	if b, _ := os.ReadFile(victim); string(b) != "untouched" {
		t.Errorf("the container's log went through a symlink: the file outside reads %q", b)
	}
	d.removePod(t, pod)
	d.checkPodGone(t, pod)
}

// TestProbesDoNotFillState: an exec probe's calls, 500 here, leave the
// node's tmpfs (the state directory: shim logs, exit records) as it was.
func TestProbesDoNotFillState(t *testing.T) {
	d, pod, _, id := sleeperPod(t, "probed")
	size := func() int64 {
		var n int64
		filepath.WalkDir(d.state, func(_ string, e os.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				if fi, err := e.Info(); err == nil {
					n += fi.Size()
				}
			}
			return nil
		})
		return n
	}
	before := size()
	for range 500 {
		d.exec(t, id, "true")
	}
	if grew := size() - before; grew > 4096 {
		t.Errorf("500 ExecSyncs grew the state directory by %d bytes", grew)
	}
	d.removePod(t, pod)
}

// TestHostUsersStayOut: a user of the node (nobody) can enter no container's
// rootfs, no pod's directory (its /dev/shm is there) and cannot list the
// pods' network namespaces, with and without a pod with a user namespace
// running (which once opened the paths above the rootfs to everyone).
func TestHostUsersStayOut(t *testing.T) {
	d, plain, _, a := sleeperPod(t, "plain")
	mapping := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 200000, Length: 65536}}
	userns := &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: mapping, Gids: mapping}
	usCfg := podConfig(t, "mapped")
	usCfg.LogDirectory = t.TempDir()
	usCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: userns}}
	mapped := d.runPod(t, usCfg)
	cfg := containerConfig("b", "sleep", "300")
	cfg.Linux.SecurityContext.NamespaceOptions.UsernsOptions = userns
	b := d.createContainer(t, mapped, usCfg, cfg)
	d.startContainer(t, b)

	paths := []string{
		filepath.Join(d.state, "netns"),
		filepath.Join(d.state, "pods", plain), filepath.Join(d.state, "pods", plain, "shm"),
		filepath.Join(d.state, "pods", mapped), filepath.Join(d.state, "pods", mapped, "shm"),
		filepath.Join(d.state, "containers"), filepath.Join(d.state, "pods"),
		filepath.Join(d.state, "containers", a, "rootfs"), filepath.Join(d.state, "containers", b, "rootfs"),
		filepath.Join(d.state, "containers", a, "rootfs", "bin"),
		filepath.Join(d.root, "image"), d.root,
	}
	for _, p := range paths {
		ls := exec.Command("ls", p)
		ls.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		if out, err := ls.CombinedOutput(); err == nil || !strings.Contains(string(out), "Permission denied") {
			t.Errorf("nobody can list %s: %v %s", p, err, out)
		}
	}
	if out, code := d.exec(t, b, "touch", "/tmp/ok"); code != 0 {
		t.Errorf("the user-namespaced container cannot write its rootfs: %s", out)
	}
	d.removePod(t, mapped)
	d.removePod(t, plain)
	d.checkPodGone(t, mapped)
	d.checkPodGone(t, plain)
}

// TestDefaultMasks: a container whose config names no masked or read-only
// paths (crictl's, say) and has no user namespace of its own still has
// /proc/sys read-only and /proc/keys masked (what of those lists this
// kernel has).
func TestDefaultMasks(t *testing.T) {
	d, pod, _, id := sleeperPod(t, "masks")
	mounts, _ := d.exec(t, id, "cat", "/proc/mounts")
	if !strings.Contains(mounts, " /proc/sys proc ro,") || !strings.Contains(mounts, " /proc/keys ") {
		t.Errorf("/proc/sys not read-only or /proc/keys not masked:\n%s", mounts)
	}
	if out, code := d.exec(t, id, "sh", "-c", "echo 1 > /proc/sys/kernel/sysrq"); code == 0 {
		t.Errorf("a write to /proc/sys succeeded: %s", out)
	}
	d.removePod(t, pod)
}

// TestContainersJoinPinnedNamespaces: a pod's containers join its IPC, UTS
// and PID namespaces through pins in its directory, not through its PID 1's
// /proc entry, whose PID another process could have by then.
func TestContainersJoinPinnedNamespaces(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	d.mustPull(t, busybox)
	pod, podCfg, _ := d.sharedPIDPod(t, "pins")
	cfg := containerConfig("c", "sleep", "300")
	cfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	id := d.createContainer(t, pod, podCfg, cfg)
	d.startContainer(t, id)
	pid := d.ctrPID(t, id)
	for _, kind := range []string{"ipc", "uts", "pid"} {
		pin := filepath.Join(d.state, "pods", pod, kind+"ns")
		if got, want := nsInode(t, filepath.Join("/proc", fmt.Sprint(pid), "ns", kind)), nsInode(t, pin); got != want {
			t.Errorf("%s namespace %d, the pod's pin %d", kind, got, want)
		}
	}
	d.removePod(t, pod)
	d.checkPodGone(t, pod)
	if _, err := os.Stat(filepath.Join(d.state, "pods", pod)); err == nil {
		t.Error("the pod's directory (and its pins) is still there")
	}
}

// blockedWriter never returns from Write until released: an attach client
// that stopped reading.
type blockedWriter struct{ release chan struct{} }

func (w blockedWriter) Write(b []byte) (int, error) {
	<-w.release
	return len(b), nil
}

// TestStalledAttachClient: an attached client that stops reading neither
// slows the container nor loses its log: the container writes 20 MB and
// exits, its log whole.
func TestStalledAttachClient(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	d.mustPull(t, busybox)
	pod, podCfg, _ := d.podWithLogs(t, "stalled")
	cfg := containerConfig("chatty", "sh", "-c", "sleep 2; head -c 20000000 /dev/zero | tr '\\0' a | fold -w 100; echo; echo done")
	cfg.Stdin = true
	id := d.createContainer(t, pod, podCfg, cfg)
	d.startContainer(t, id)
	resp, err := d.rt.Attach(ctxT(t, 5*time.Second), &runtimeapi.AttachRequest{ContainerId: id, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	w := blockedWriter{release: make(chan struct{})}
	defer close(w.release)
	stdin, _ := io.Pipe() // never written: the client's stdin stays open
	go func() {
		_ = executor(t, resp.Url, false).StreamWithContext(ctxT(t, 2*time.Minute), remotecommand.StreamOptions{Stdin: stdin, Stdout: w, Stderr: w})
	}()
	st := d.waitExited(t, id, time.Minute)
	if st.ExitCode != 0 {
		t.Errorf("exit %d", st.ExitCode)
	}
	if log := readLog(t, st.LogPath); !strings.HasSuffix(log, " stdout F done\n") || strings.Count(log, "\n") != 200001 {
		t.Errorf("the log has %d lines, ends %q", strings.Count(log, "\n"), log[max(0, len(log)-40):])
	}
	d.removePod(t, pod)
	d.checkPodGone(t, pod)
}

// TestPortForwardHalfPairs: a websocket-tunnelled port-forward client that
// opens data streams without their error streams gets only so many held
// for it; the ones past that are reset rather than kept for ever.
func TestPortForwardHalfPairs(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	pod, _, _ := d.podWithLogs(t, "halves")
	resp, err := d.rt.PortForward(ctxT(t, 5*time.Second), &runtimeapi.PortForwardRequest{PodSandboxId: pod, Port: []int32{80}})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(resp.Url)
	dialer, err := portforward.NewSPDYOverWebsocketDialer(u, &rest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	conn, _, err := dialer.Dial(portforward.PortForwardProtocolV1Name)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The server may reset a stream past the bound before it replies, so
	// its CreateStream fails: refused outright, as good as reset.
	const bound = 64 // cri/streaming's maxUnpaired
	streams := make([]httpstream.Stream, 80)
	for i := range streams {
		h := http.Header{}
		h.Set("streamType", "data")
		h.Set("port", "80")
		h.Set("requestID", fmt.Sprint(i))
		st, err := conn.CreateStream(h)
		if err != nil && i < bound {
			t.Fatalf("stream %d, within the bound, refused: %v", i, err)
		}
		streams[i] = st
	}
	read := func(st httpstream.Stream) <-chan error {
		done := make(chan error, 1)
		if st == nil {
			done <- errors.New("refused")
			return done
		}
		go func() { _, err := st.Read(make([]byte, 1)); done <- err }()
		return done
	}
	// The first waits for its partner; the last, past the bound, ends at once.
	first, last := read(streams[0]), read(streams[len(streams)-1])
	select {
	case err := <-last:
		if err == nil {
			t.Error("the stream past the bound gave data")
		}
	case <-time.After(10 * time.Second):
		t.Errorf("stream %d, past the bound of %d unpaired streams, is still held", len(streams), bound)
	}
	select {
	case err := <-first:
		t.Errorf("the first stream, within the bound, ended: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	d.removePod(t, pod)
}
