//go:build e2e

package e2e

// The pods' side of the harness: a test-only CNI network (its own bridge,
// subnet and IPAM directory, no masquerade), the guard that keeps its
// traffic on the bridge, and the host checks that a pod left nothing.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const (
	podBridge    = "ketche2e0"
	podSubnet    = "10.251.0.0/20" // room for `make scale`'s 1,000 pods
	podGuard     = "ketch e2e guard"
	cgroupParent = "/ketch-e2e" // every test pod's cgroups go below it
)

// writePodNetwork installs the test network as dir's only CNI config, with
// host-local's allocations in ipamDir.
func writePodNetwork(tb testing.TB, dir, ipamDir string) {
	tb.Helper()
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0", "name": "ketch-e2e",
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "dataDir": %q}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}`, podBridge, podSubnet, ipamDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "10-e2e.conflist"), []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// guardPodNetwork drops anything the test bridge would forward off the
// bridge (the bridge plugin turns ip_forward on), and returns the function
// that removes the guard, the bridge and the test cgroup parent, and
// restores ip_forward.
func guardPodNetwork() (func(), error) {
	forward, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		return nil, err
	}
	rules := [][]string{
		{"-i", podBridge, "!", "-o", podBridge},
		{"-o", podBridge, "!", "-i", podBridge},
	}
	rule := func(op string, r []string) error {
		args := append(append([]string{"-w", op, "FORWARD"}, r...), "-m", "comment", "--comment", podGuard, "-j", "DROP")
		if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	for _, r := range rules {
		if err := rule("-I", r); err != nil {
			return nil, err
		}
	}
	return func() {
		for _, r := range rules {
			if err := rule("-D", r); err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
		}
		_ = exec.Command("ip", "link", "del", podBridge).Run()
		_ = os.WriteFile("/proc/sys/net/ipv4/ip_forward", forward, 0o644)
		for _, mnt := range cgroupMounts() {
			_ = os.Remove(filepath.Join(mnt, cgroupParent))
		}
	}, nil
}

// podConfig is a pod config of this test's own, in the test cgroup parent.
func podConfig(tb testing.TB, name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "e2e", Uid: "uid-" + name, Attempt: 1},
		Hostname: name,
		Linux:    &runtimeapi.LinuxPodSandboxConfig{CgroupParent: cgroupParent},
	}
}

// kubeletPod is cfg as kubelet sends a pod that does not share its process
// namespace (the default): each container gets a PID namespace of its own,
// and the pod runs no PID 1 (podConfig's has the CRI's default, POD: one
// namespace, whose PID 1 is ketch-init).
func kubeletPod(cfg *runtimeapi.PodSandboxConfig) *runtimeapi.PodSandboxConfig {
	cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}}
	return cfg
}

func (d *daemon) runPod(tb testing.TB, cfg *runtimeapi.PodSandboxConfig) string {
	tb.Helper()
	resp, err := d.rt.RunPodSandbox(ctxT(tb, 30*time.Second), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		tb.Fatalf("RunPodSandbox: %v", err)
	}
	return resp.PodSandboxId
}

func (d *daemon) podStatus(tb testing.TB, id string) (*runtimeapi.PodSandboxStatus, map[string]string) {
	tb.Helper()
	resp, err := d.rt.PodSandboxStatus(ctxT(tb, 10*time.Second), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		tb.Fatalf("PodSandboxStatus %s: %v", id, err)
	}
	return resp.Status, resp.Info
}

// podPID is the host PID of the pod's PID 1, from the verbose status.
func (d *daemon) podPID(tb testing.TB, id string) int {
	tb.Helper()
	pid, err := d.initPID(id)
	if err != nil || pid <= 0 {
		tb.Fatalf("pod %s: pid %d from its verbose status, %v", id, pid, err)
	}
	return pid
}

// initPID is podPID without failing the test: an error when the pod cannot
// say.
func (d *daemon) initPID(id string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := d.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		return 0, err
	}
	var v struct {
		PID int `json:"pid"`
	}
	err = json.Unmarshal([]byte(resp.Info["info"]), &v)
	return v.PID, err
}

// shimPID is the PID of pod id's shim, from the file it writes; 0 when
// there is none.
func (d *daemon) shimPID(id string) int {
	b, _ := os.ReadFile(filepath.Join(d.state, "pods", id, "shim", "shim.pid"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// shimOf is the ID of the shim that serves pod id, from the pod's link to
// it; "" when there is none.
func (d *daemon) shimOf(id string) string {
	target, err := os.Readlink(filepath.Join(d.state, "pods", id, "shim"))
	if err != nil {
		return ""
	}
	return filepath.Base(target)
}

func (d *daemon) stopPod(tb testing.TB, id string) {
	tb.Helper()
	if _, err := d.rt.StopPodSandbox(ctxT(tb, 30*time.Second), &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		tb.Fatalf("StopPodSandbox %s: %v", id, err)
	}
}

func (d *daemon) removePod(tb testing.TB, id string) {
	tb.Helper()
	if _, err := d.rt.RemovePodSandbox(ctxT(tb, 30*time.Second), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		tb.Fatalf("RemovePodSandbox %s: %v", id, err)
	}
}

func (d *daemon) pods(tb testing.TB, f *runtimeapi.PodSandboxFilter) []*runtimeapi.PodSandbox {
	tb.Helper()
	resp, err := d.rt.ListPodSandbox(ctxT(tb, 10*time.Second), &runtimeapi.ListPodSandboxRequest{Filter: f})
	if err != nil {
		tb.Fatalf("ListPodSandbox: %v", err)
	}
	return resp.Items
}

// removeAllPods removes what a test left running, so a failure does not
// leave pods on the host. It runs before ketchd, or a peer runtime, stops.
func (d *daemon) removeAllPods(tb testing.TB) {
	if d.stopped || d.rt == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := d.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return
	}
	// A peer runtime refuses to remove a pod that runs, and gives each
	// container that ignores TERM a grace period when it stops a pod.
	if ctrs, err := d.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{}); err == nil {
		for _, c := range ctrs.Containers {
			_, _ = d.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c.Id})
		}
	}
	for _, p := range resp.Items {
		_, _ = d.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id})
		if _, err := d.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			tb.Errorf("clean-up: remove pod %s: %v", p.Id, err)
		}
	}
}

// checkPodGone checks that nothing of pod id remains on the host: no
// record, process, netns, mount, cgroup, veth on the test bridge, IP
// allocation, iptables rule or state file.
func (d *daemon) checkPodGone(tb testing.TB, id string) {
	tb.Helper()
	for _, p := range d.pods(tb, nil) {
		if p.Id == id {
			tb.Errorf("pod %s is still listed", id)
		}
	}
	for _, path := range []string{filepath.Join(d.state, "pods", id), filepath.Join(d.state, "netns", id)} {
		if _, err := os.Stat(path); err == nil {
			tb.Errorf("%s is left", path)
		}
	}
	if mounts, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mounts), id) {
		tb.Errorf("a mount of pod %s is left", id)
	}
	for _, mnt := range cgroupMounts() {
		if dirs, _ := filepath.Glob(filepath.Join(mnt, "*", id)); len(dirs) > 0 {
			tb.Errorf("cgroup of pod %s is left: %v", id, dirs)
		}
		if _, err := os.Stat(filepath.Join(mnt, id)); err == nil {
			tb.Errorf("cgroup of pod %s is left in %s", id, mnt)
		}
	}
	if pids := processesOf(id); len(pids) > 0 {
		tb.Errorf("processes of pod %s are left: %v", id, pids)
	}
	ipam, _ := filepath.Glob(filepath.Join(d.dir, "ipam", "*", "*"))
	for _, f := range ipam {
		if b, _ := os.ReadFile(f); strings.Contains(string(b), id) {
			tb.Errorf("IP allocation %s of pod %s is left", f, id)
		}
	}
	if out, _ := exec.Command("iptables-save").Output(); strings.Contains(string(out), id) {
		tb.Errorf("iptables rules of pod %s are left", id)
	}
}

// checkBridgeEmpty: with no pod left, no veth hangs on the test bridge.
func checkBridgeEmpty(tb testing.TB) {
	tb.Helper()
	out, _ := exec.Command("ip", "-o", "link", "show", "master", podBridge).Output()
	if s := strings.TrimSpace(string(out)); s != "" {
		tb.Errorf("veths left on %s:\n%s", podBridge, s)
	}
}

// processesOf lists the live processes whose command line or cgroup names
// id: the pod's shim (--id) and everything in its cgroups.
func processesOf(id string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !alive(pid) {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if strings.Contains(string(cmdline), id) || strings.Contains(string(cg), id) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// alive is false for a PID that is gone or a zombie.
func alive(pid int) bool {
	st, ok := procState(pid)
	return ok && st != 'Z' && st != 'X'
}

func procState(pid int) (byte, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return 0, false
	}
	return s[i+2], true
}

// cgroupMounts lists the mount points of every cgroup hierarchy.
func cgroupMounts() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var mnts []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && (fields[i+1] == "cgroup" || fields[i+1] == "cgroup2") {
				mnts = append(mnts, fields[4])
			}
		}
	}
	return mnts
}

// nsInode is the inode of the namespace a /proc/<pid>/ns/<kind> link or a
// netns pin names: equal inodes are the same namespace.
func nsInode(tb testing.TB, path string) uint64 {
	tb.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		tb.Fatal(err)
	}
	return st.Ino
}
