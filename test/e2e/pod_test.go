//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/sandbox/netns"
)

// TestPodLifecycle runs a pod with everything a kubelet pod config carries
// and checks each part on the host, then stops and removes it (twice each):
// one whose containers share a PID namespace, held by ketch-init, and one
// as kubelet makes by default, each container with a PID namespace of its
// own, which runs no process of its own.
func TestPodLifecycle(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	for _, tc := range []struct {
		name string
		pid  runtimeapi.NamespaceMode
	}{{"shared PID namespace", runtimeapi.NamespaceMode_POD}, {"a PID namespace per container", runtimeapi.NamespaceMode_CONTAINER}} {
		t.Run(tc.name, func(t *testing.T) { testPodLifecycle(t, d, tc.pid) })
	}
}

func testPodLifecycle(t *testing.T, d *daemon, pidMode runtimeapi.NamespaceMode) {
	cfg := podConfig(t, "lifecycle")
	if pidMode == runtimeapi.NamespaceMode_CONTAINER {
		kubeletPod(cfg)
	}
	cfg.Labels = map[string]string{"app": "web", "io.kubernetes.pod.name": "lifecycle"}
	cfg.Annotations = map[string]string{"note": "kept as is"}
	cfg.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"10.10.10.10"}, Searches: []string{"e2e.test"}, Options: []string{"ndots:8"}}
	cfg.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: 18080, HostIp: "127.0.0.1"}}
	cfg.Linux.Sysctls = map[string]string{"kernel.shm_rmid_forced": "1", "net.ipv4.ip_unprivileged_port_start": "80"}
	id := d.runPod(t, cfg)

	st, _ := d.podStatus(t, id)
	if st.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("state %v, want READY", st.State)
	}
	if md := st.Metadata; md.Name != "lifecycle" || md.Namespace != "e2e" || md.Uid != "uid-lifecycle" || md.Attempt != 1 {
		t.Errorf("metadata %+v", md)
	}
	if st.Labels["app"] != "web" || st.Annotations["note"] != "kept as is" {
		t.Errorf("labels %v, annotations %v", st.Labels, st.Annotations)
	}
	if age := time.Since(time.Unix(0, st.CreatedAt)); age < 0 || age > time.Minute {
		t.Errorf("created_at %v ago", age)
	}
	ip, err := netip.ParseAddr(st.GetNetwork().GetIp())
	if err != nil || !netip.MustParsePrefix(podSubnet).Contains(ip) {
		t.Fatalf("pod IP %q is not in %s", st.GetNetwork().GetIp(), podSubnet)
	}

	pod := filepath.Join(d.state, "pods", id)
	pin := filepath.Join(d.state, "netns", id)
	var pid int
	if pidMode == runtimeapi.NamespaceMode_POD {
		pid = d.podPID(t, id)
		// ketch-init is PID 1 of a PID namespace of the pod's own.
		if nspid := procField(t, pid, "NSpid"); !strings.HasSuffix(nspid, "\t1") {
			t.Errorf("NSpid of ketch-init = %q, want PID 1 in its own namespace", nspid)
		}
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) != "ketch-init" {
			t.Errorf("the pod's PID 1 is %q", comm)
		}
		if nsInode(t, pin) != nsInode(t, fmt.Sprintf("/proc/%d/ns/net", pid)) {
			t.Error("ketch-init is not in the pod's pinned netns")
		}
		for _, ns := range []string{"ipc", "uts", "pid"} {
			if nsInode(t, filepath.Join(pod, ns+"ns")) != nsInode(t, fmt.Sprintf("/proc/%d/ns/%s", pid, ns)) {
				t.Errorf("the pod's %s pin is not ketch-init's namespace", ns)
			}
		}
		if mi := readFile(t, fmt.Sprintf("/proc/%d/mountinfo", pid)); !strings.Contains(mi, " /dev/shm ") {
			t.Error("the pod has no /dev/shm of its own")
		}
	} else {
		if _, info := d.podStatus(t, id); !strings.Contains(info["info"], `"pid":0`) {
			t.Errorf("verbose info of a pod without PID 1: %s, want pid 0", info["info"])
		}
		if pids := processesOf(id); len(pids) != 0 || !alive(d.shimPID(id)) {
			t.Errorf("processes of the pod: %v, want none but its shim (%d, alive %v)", pids, d.shimPID(id), alive(d.shimPID(id)))
		}
		if _, err := os.Stat(filepath.Join(pod, "pidns")); err == nil {
			t.Error("a pod without a shared PID namespace has a pin of one")
		}
		for _, ns := range []string{"ipc", "uts"} {
			if nsInode(t, filepath.Join(pod, ns+"ns")) == nsInode(t, "/proc/self/ns/"+ns) {
				t.Errorf("the pod's %s namespace is the node's", ns)
			}
		}
	}
	if got := inPins(t, pod, pin, "-u", "hostname"); got != "lifecycle" {
		t.Errorf("hostname in the pod = %q", got)
	}
	if out := inPins(t, pod, pin, "-n", "ip", "-4", "-o", "addr", "show", "eth0"); !strings.Contains(out, " "+ip.String()+"/") {
		t.Errorf("eth0 in the pod: %q, want %s", out, ip)
	}
	if got := inPins(t, pod, pin, "-i", "cat", "/proc/sys/kernel/shm_rmid_forced"); got != "1" {
		t.Errorf("sysctl kernel.shm_rmid_forced in the pod = %q, want 1", got)
	}
	if got := inPins(t, pod, pin, "-n", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"); got != "80" {
		t.Errorf("sysctl net.ipv4.ip_unprivileged_port_start in the pod = %q, want 80", got)
	}
	resolv := readFile(t, filepath.Join(pod, "resolv.conf"))
	for _, want := range []string{"nameserver 10.10.10.10", "search e2e.test", "options ndots:8"} {
		if !strings.Contains(resolv, want) {
			t.Errorf("resolv.conf %q lacks %q", resolv, want)
		}
	}
	if h := readFile(t, filepath.Join(pod, "hostname")); h != "lifecycle\n" {
		t.Errorf("/etc/hostname = %q", h)
	}
	if out, _ := exec.Command("iptables-save", "-t", "nat").Output(); !strings.Contains(string(out), id) {
		t.Error("no port mapping rule names the pod")
	}

	for _, f := range []*runtimeapi.PodSandboxFilter{
		{Id: id}, {Id: id[:12]}, {LabelSelector: map[string]string{"app": "web"}},
		{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}},
	} {
		if got := d.pods(t, f); len(got) != 1 || got[0].Id != id || got[0].Labels["app"] != "web" {
			t.Errorf("ListPodSandbox(%v) = %v, want the pod", f, got)
		}
	}
	for _, f := range []*runtimeapi.PodSandboxFilter{
		{Id: "0000"}, {LabelSelector: map[string]string{"app": "db"}},
		{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}},
	} {
		if got := d.pods(t, f); len(got) != 0 {
			t.Errorf("ListPodSandbox(%v) = %v, want none", f, got)
		}
	}
	// 1 KiB sent to the pod (nothing listens: the kernel counts it on
	// eth0 and drops it) shows in its network counters.
	conn, err := net.Dial("udp", netip.AddrPortFrom(ip, 9).String())
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Write(make([]byte, 1024))
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	var stats *runtimeapi.PodSandboxStatsResponse
	waitFor(t, 10*time.Second, "1 KiB received on the pod's eth0", func() bool {
		stats, err = d.rt.PodSandboxStats(ctxT(t, 10*time.Second), &runtimeapi.PodSandboxStatsRequest{PodSandboxId: id})
		if err != nil {
			t.Fatal(err)
		}
		return stats.Stats.GetLinux().GetNetwork().GetDefaultInterface().GetRxBytes().GetValue() >= 1024
	})
	l := stats.Stats.GetLinux()
	if stats.Stats.GetAttributes().GetId() != id || l.GetNetwork().GetDefaultInterface().GetName() != "eth0" {
		t.Errorf("PodSandboxStats = %v", stats.Stats)
	}
	// ketch-init is what a pod without containers runs.
	if pid > 0 && (l.GetMemory().GetWorkingSetBytes().GetValue() == 0 || l.GetProcess().GetProcessCount().GetValue() == 0) {
		t.Errorf("PodSandboxStats of a pod with ketch-init = %v", stats.Stats)
	}

	for range 2 {
		d.stopPod(t, id)
		if st, _ := d.podStatus(t, id); st.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
			t.Errorf("after stop: state %v", st.State)
		}
	}
	if pid > 0 && alive(pid) {
		t.Error("ketch-init still runs after StopPodSandbox")
	}
	if ipam, _ := filepath.Glob(filepath.Join(d.dir, "ipam", "ketch-e2e", ip.String())); len(ipam) != 0 {
		t.Errorf("the pod's IP is still allocated after stop: %v", ipam)
	}
	for range 2 {
		d.removePod(t, id)
	}
	d.checkPodGone(t, id)
	checkBridgeEmpty(t)
	d.stopPod(t, id) // a removed pod is as stopped as it gets
	_, err = d.rt.PodSandboxStatus(ctxT(t, 10*time.Second), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
	if status.Code(err) != codes.NotFound {
		t.Errorf("status of a removed pod: %v, want NotFound", err)
	}
}

// TestPodProcessesShareNetwork: two processes that join a pod, as its
// containers will, see one network namespace: the same interfaces, IP and
// hostname.
func TestPodProcessesShareNetwork(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	id := d.runPod(t, podConfig(t, "shared"))
	pid := d.podPID(t, id)
	st, _ := d.podStatus(t, id)
	const probe = `echo "$(hostname) $(readlink /proc/self/ns/net)"; ip -4 -o addr show | awk '{print $2, $4}'`
	// Two processes started apart, each joining the pod's namespaces.
	a := inPod(t, pid, "-n", "-u", "sh", "-c", probe)
	b := inPod(t, pid, "-n", "-u", "sh", "-c", probe)
	if a != b {
		t.Errorf("two processes of the pod see different networks:\n%s\n---\n%s", a, b)
	}
	for _, want := range []string{"shared net:[", "lo 127.0.0.1/8", "eth0 " + st.Network.Ip + "/"} {
		if !strings.Contains(a, want) {
			t.Errorf("the pod's view %q lacks %q", a, want)
		}
	}
	d.stopPod(t, id)
	d.removePod(t, id)
	d.checkPodGone(t, id)
}

// TestPodReapsOrphans: with a shared PID namespace ketch-init is the pod's
// PID 1 and reaps every orphan; with the node's, it is not PID 1 at all.
func TestPodReapsOrphans(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	cfg := podConfig(t, "reaper")
	cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD},
	}
	id := d.runPod(t, cfg)
	pid := d.podPID(t, id)
	if nspid := procField(t, pid, "NSpid"); !strings.HasSuffix(nspid, "\t1") {
		t.Fatalf("NSpid of ketch-init = %q, want PID 1", nspid)
	}
	// 100 children whose parents exit at once: each sleep is orphaned in
	// the pod's PID namespace and reparented to its PID 1.
	inPod(t, pid, "-p", "sh", "-c", `for i in $(seq 100); do (sleep 2 >/dev/null 2>&1 &); done`)
	if n := len(childrenOf(pid)); n < 100 {
		t.Fatalf("ketch-init has %d children, want the 100 orphans", n)
	}
	deadline := time.Now().Add(2*time.Second + time.Second) // the sleeps, then 1 s to reap them
	for time.Now().Before(deadline) && len(childrenOf(pid)) > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	var zombies, left int
	for _, c := range childrenOf(pid) {
		left++
		if st, _ := procState(c); st == 'Z' {
			zombies++
		}
	}
	if left > 0 {
		t.Errorf("1 s after the orphans exited ketch-init still has %d children (%d zombies)", left, zombies)
	}
	d.stopPod(t, id)
	d.removePod(t, id)
	d.checkPodGone(t, id)

	cfg = podConfig(t, "hostpid")
	cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_NODE},
	}
	// The node's PID namespace needs no PID 1 of the pod's: its
	// containers' orphans go to the shim, their subreaper.
	id = d.runPod(t, cfg)
	if pid, err := d.initPID(id); err != nil || pid != 0 {
		t.Errorf("a pod with the node's PID namespace: PID %d (%v), want none", pid, err)
	}
	if pids := processesOf(id); len(pids) != 0 || !alive(d.shimPID(id)) {
		t.Errorf("processes of a pod with the node's PID namespace: %v, want none but its shim", pids)
	}
	d.removePod(t, id)
	d.checkPodGone(t, id)
}

// TestHostNetworkPod: a pod with the node's network and IPC namespaces has
// them, the node's hostname, no netns pin and no pod IP.
func TestHostNetworkPod(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	cfg := podConfig(t, "hostnet")
	cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE},
	}
	id := d.runPod(t, cfg)
	pid := d.podPID(t, id)
	for _, ns := range []string{"net", "uts", "ipc"} {
		if nsInode(t, fmt.Sprintf("/proc/%d/ns/%s", pid, ns)) != nsInode(t, "/proc/self/ns/"+ns) {
			t.Errorf("the host-network pod has a %s namespace of its own", ns)
		}
	}
	if nsInode(t, fmt.Sprintf("/proc/%d/ns/pid", pid)) == nsInode(t, "/proc/self/ns/pid") {
		t.Error("the pod shares the node's PID namespace without asking")
	}
	host, _ := os.Hostname()
	if h := readFile(t, fmt.Sprintf("/proc/%d/root/etc/hostname", pid)); h != host+"\n" {
		t.Errorf("/etc/hostname = %q, want the node's %q", h, host)
	}
	if _, err := os.Stat(filepath.Join(d.state, "netns", id)); err == nil {
		t.Error("a host-network pod got a netns pin")
	}
	if st, _ := d.podStatus(t, id); st.GetNetwork().GetIp() != "" || st.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("status: state %v, ip %q; want READY without a pod IP", st.State, st.GetNetwork().GetIp())
	}
	d.stopPod(t, id)
	d.removePod(t, id)
	d.checkPodGone(t, id)
}

// TestPodInitKilled: a pod whose PID 1 was killed (OOM, an admin) is
// NOTREADY in status and lists, and stops and removes cleanly.
func TestPodInitKilled(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	id := d.runPod(t, podConfig(t, "killed"))
	pid := d.podPID(t, id)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitNotReady(t, d, id)
	d.stopPod(t, id)
	d.removePod(t, id)
	d.checkPodGone(t, id)
}

// TestPodShimKilled: a pod whose shim was killed is NOTREADY and its
// running container EXITED with reason ShimDied, and no longer runs;
// Remove still ends the pod's processes (ketch-init outlives its shim)
// and frees everything.
func TestPodShimKilled(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	d.mustPull(t, busybox)
	for _, shared := range []bool{true, false} {
		t.Run(fmt.Sprintf("shared PID namespace %v", shared), func(t *testing.T) {
			run := d.podWithLogs
			if shared {
				run = d.sharedPIDPod
			}
			id, podCfg, _ := run(t, "shimkilled")
			var pid int
			if shared {
				pid = d.podPID(t, id)
			}
			ctr := d.createContainer(t, id, podCfg, containerConfig("sleeper", "sleep", "3600"))
			d.startContainer(t, ctr)
			ctrPID := d.ctrPID(t, ctr)
			shimPid := d.shimPID(id)
			if shimPid <= 0 {
				t.Fatal("the pod's shim wrote no PID")
			}
			if err := syscall.Kill(shimPid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			waitNotReady(t, d, id)
			if shared && !alive(pid) {
				t.Fatal("ketch-init died with its shim; this test needs it orphaned")
			}
			if st := d.waitExited(t, ctr, 5*time.Second); st.Reason != "ShimDied" || st.ExitCode != 255 {
				t.Errorf("the container of a dead shim: %s %d, want ShimDied 255", st.Reason, st.ExitCode)
			}
			if alive(ctrPID) {
				t.Error("the container is reported exited but its process runs")
			}
			d.stopPod(t, id)
			if shared && alive(pid) {
				t.Error("StopPodSandbox left the orphaned ketch-init running")
			}
			d.removePod(t, id)
			d.checkPodGone(t, id)
		})
	}
}

// TestShimGroupDeath: a shim serves up to pods_per_shim pods, the fullest
// with room first; its death costs those pods their containers and
// readiness and no other pod anything, and a shim goes with the last pod
// it served.
func TestShimGroupDeath(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true, podsPerShim: 2})
	d.mustPull(t, busybox)
	var pods, ctrs []string
	for i := range 3 {
		id, cfg, _ := d.podWithLogs(t, fmt.Sprintf("group-%d", i))
		ctr := d.createContainer(t, id, cfg, containerConfig("sleeper", "sleep", "3600"))
		d.startContainer(t, ctr)
		pods, ctrs = append(pods, id), append(ctrs, ctr)
	}
	shimA, shimB := d.shimOf(pods[0]), d.shimOf(pods[2])
	if shimA == "" || d.shimOf(pods[1]) != shimA || shimB == shimA {
		t.Fatalf("shims of the pods: %s %s %s; want the first two in one, the third in another",
			shimA, d.shimOf(pods[1]), shimB)
	}
	pidA := d.shimPID(pods[0])
	ctrPIDs := []int{d.ctrPID(t, ctrs[0]), d.ctrPID(t, ctrs[1])}
	if err := syscall.Kill(pidA, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// As kubelet may, before ketchd has seen the death: nothing runs to
	// be stopped, and the stop succeeds.
	if _, err := d.rt.StopContainer(ctxT(t, 30*time.Second), &runtimeapi.StopContainerRequest{ContainerId: ctrs[0], Timeout: 10}); err != nil {
		t.Errorf("StopContainer in a pod whose shim just died: %v", err)
	}
	for i := range 2 {
		waitNotReady(t, d, pods[i])
		if st := d.waitExited(t, ctrs[i], 5*time.Second); st.Reason != "ShimDied" || st.ExitCode != 255 {
			t.Errorf("the container of pod %d of the dead shim: %s %d, want ShimDied 255", i, st.Reason, st.ExitCode)
		}
		if alive(ctrPIDs[i]) {
			t.Errorf("the container of pod %d is reported exited but its process runs", i)
		}
	}
	if st, _ := d.podStatus(t, pods[2]); st.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("the pod of the other shim is %v", st.State)
	}
	if out, code := d.exec(t, ctrs[2], "echo", "alive"); out != "alive" || code != 0 {
		t.Errorf("exec in the pod of the other shim: %q, %d", out, code)
	}
	// The dead shim takes no new pod; the other one has room for one.
	id, _, _ := d.podWithLogs(t, "group-3")
	if got := d.shimOf(id); got != shimB {
		t.Errorf("a new pod went to shim %s, want %s (the one with room)", got, shimB)
	}
	pods = append(pods, id)
	for _, id := range pods[:2] {
		d.stopPod(t, id)
		d.removePod(t, id)
		d.checkPodGone(t, id)
	}
	if _, err := os.Stat(filepath.Join(d.state, "shims", shimA)); !os.IsNotExist(err) {
		t.Errorf("the dead shim's directory is left after its pods went (%v)", err)
	}
	pidB := d.shimPID(pods[2])
	for _, id := range pods[2:] {
		d.removePod(t, id)
		d.checkPodGone(t, id)
	}
	if alive(pidB) {
		t.Error("the shim runs after its last pod went")
	}
	if ents, _ := os.ReadDir(filepath.Join(d.state, "shims")); len(ents) > 0 {
		t.Errorf("shim directories left: %v", ents)
	}
}

// TestPodVanishedNetns: somebody unmounted the pod's netns; stop and
// remove still free its IP and everything else.
func TestPodVanishedNetns(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	id := d.runPod(t, podConfig(t, "vanished"))
	d.podPID(t, id)
	if err := syscall.Unmount(filepath.Join(d.state, "netns", id), syscall.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	d.stopPod(t, id)
	d.removePod(t, id)
	d.checkPodGone(t, id)
	checkBridgeEmpty(t)
}

// waitNotReady waits for the pod to be reported NOTREADY, then checks that
// it stays so in status and in lists.
func waitNotReady(t *testing.T, d *daemon, id string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := d.podStatus(t, id)
		if st.State == runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the pod is still READY 5 s after its PID 1 died")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for range 3 {
		if st, _ := d.podStatus(t, id); st.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
			t.Errorf("status went back to %v", st.State)
		}
		if got := d.pods(t, &runtimeapi.PodSandboxFilter{Id: id}); len(got) != 1 || got[0].State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
			t.Errorf("list shows %v, want the pod NOTREADY", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// inPod runs a host program in pid's namespaces (nsenter flags, e.g. -n -u)
// and returns its trimmed output.
func inPod(t *testing.T, pid int, args ...string) string {
	t.Helper()
	var flags, cmd []string
	for i, a := range args {
		if !strings.HasPrefix(a, "-") {
			flags, cmd = args[:i], args[i:]
			break
		}
	}
	full := append(append([]string{"-t", strconv.Itoa(pid)}, flags...), append([]string{"--"}, cmd...)...)
	out, err := exec.Command("nsenter", full...).CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter %s: %v\n%s", strings.Join(full, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// inPins runs a host program in the namespaces of the pod whose directory
// is pod and netns pin is netns (nsenter's -n, -u, -i), through their pins,
// and returns its trimmed output.
func inPins(t *testing.T, pod, netns string, args ...string) string {
	t.Helper()
	pins := map[string]string{"-n": "--net=" + netns, "-u": "--uts=" + filepath.Join(pod, "utsns"), "-i": "--ipc=" + filepath.Join(pod, "ipcns")}
	var full []string
	for i, a := range args {
		if pins[a] == "" {
			full = append(append(full, "--"), args[i:]...)
			break
		}
		full = append(full, pins[a])
	}
	out, err := exec.Command("nsenter", full...).CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter %s: %v\n%s", strings.Join(full, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func procField(t *testing.T, pid int, key string) string {
	t.Helper()
	for _, line := range strings.Split(readFile(t, fmt.Sprintf("/proc/%d/status", pid)), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			return strings.TrimRight(v, " ")
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return ""
}

// childrenOf lists pid's children.
func childrenOf(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var kids []int
	for _, task := range tasks {
		data, _ := os.ReadFile(task)
		for _, f := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(f); err == nil {
				kids = append(kids, n)
			}
		}
	}
	return kids
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRunPodSandboxBadInput: every refused or failed RunPodSandbox answers
// a clear code and leaves the host as it was, and the name can be used
// again afterwards.
func TestRunPodSandboxBadInput(t *testing.T) {
	bin := t.TempDir()
	for name, add := range map[string]string{
		"ketch-e2e-fail": `echo '{"cniVersion":"1.0.0","code":11,"msg":"ketch-e2e-fail refuses every pod"}'; exit 1`,
		"ketch-e2e-hang": `exec sleep 300`,
	} {
		script := "#!/bin/sh\ncase \"$CNI_COMMAND\" in\nVERSION) echo '{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"1.0.0\"]}' ;;\nADD) cat >/dev/null; " +
			add + " ;;\n*) cat >/dev/null ;;\nesac\n"
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d := startKetchd(t, daemonOpts{network: true, extra: fmt.Sprintf("cni_bin_dirs = [%q, \"/usr/lib/cni\"]", bin)})
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	heldPort := held.Addr().(*net.TCPAddr).Port
	// A second network config that a case swaps in: the bridge does its
	// part of ADD (veth, IP), then the failing or hanging plugin runs.
	netd := filepath.Join(d.dir, "net.d", "10-e2e.conflist")
	good := readFile(t, netd)
	withPlugin := func(plugin string) func() {
		return func() {
			bad := strings.Replace(good, `{"type": "loopback"}`, `{"type": "loopback"}, {"type": "`+plugin+`"}`, 1)
			if err := os.WriteFile(netd, []byte(bad), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}

	// noInit has a case run a pod as kubelet does by default, whose
	// containers each get a PID namespace: it has no PID 1.
	noInit := func(m func(*runtimeapi.RunPodSandboxRequest)) func(*runtimeapi.RunPodSandboxRequest) {
		return func(r *runtimeapi.RunPodSandboxRequest) {
			kubeletPod(r.Config)
			m(r)
		}
	}
	for _, tc := range []struct {
		desc    string
		mutate  func(*runtimeapi.RunPodSandboxRequest)
		setup   func() // changes the node for this case; undone after it
		timeout time.Duration
		code    codes.Code
		inMsg   string
	}{
		{desc: "no config", mutate: func(r *runtimeapi.RunPodSandboxRequest) { r.Config = nil }, code: codes.InvalidArgument},
		{desc: "no metadata", mutate: func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Metadata = nil }, code: codes.InvalidArgument},
		{desc: "no uid", mutate: func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Metadata.Uid = "" }, code: codes.InvalidArgument},
		{desc: "bad hostname", mutate: func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Hostname = "Not_A_Host" },
			code: codes.InvalidArgument, inMsg: "Not_A_Host"},
		{desc: "unknown runtime handler", mutate: func(r *runtimeapi.RunPodSandboxRequest) { r.RuntimeHandler = "kata" },
			code: codes.InvalidArgument, inMsg: "kata"},
		{desc: "pid namespace TARGET", mutate: func(r *runtimeapi.RunPodSandboxRequest) {
			r.Config.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET}}
		}, code: codes.InvalidArgument},
		{desc: "DNS server not an IP", mutate: func(r *runtimeapi.RunPodSandboxRequest) {
			r.Config.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"dns.example"}}
		}, code: codes.InvalidArgument, inMsg: "dns.example"},
		{desc: "port out of range", mutate: func(r *runtimeapi.RunPodSandboxRequest) {
			r.Config.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 70000}}
		}, code: codes.InvalidArgument},
		{desc: "cgroup parent escapes", mutate: func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Linux.CgroupParent = "/ketch-e2e/../x" },
			code: codes.InvalidArgument},
		// Refused only once the network is up and the shim runs: the
		// undo path for both.
		{desc: "sysctl of no namespace", mutate: func(r *runtimeapi.RunPodSandboxRequest) {
			r.Config.Linux.Sysctls = map[string]string{"vm.swappiness": "10"}
		}, code: codes.InvalidArgument, inMsg: "vm.swappiness"},
		{desc: "sysctl value the kernel refuses", mutate: func(r *runtimeapi.RunPodSandboxRequest) {
			r.Config.Linux.Sysctls = map[string]string{"kernel.shm_rmid_forced": "yes"}
		}, code: codes.InvalidArgument, inMsg: "kernel.shm_rmid_forced"},
		{desc: "cgroup parent that cannot be created", mutate: func(r *runtimeapi.RunPodSandboxRequest) {
			r.Config.Linux.CgroupParent = "/ketch-e2e/cgroup.procs/x"
		}, code: codes.FailedPrecondition, inMsg: "cgroup"},
		{desc: "host port a node process holds", mutate: func(r *runtimeapi.RunPodSandboxRequest) {
			r.Config.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: int32(heldPort), HostIp: "127.0.0.1"}}
		}, code: codes.FailedPrecondition, inMsg: "in use"},
		{desc: "sysctl of the node's IPC namespace", mutate: func(r *runtimeapi.RunPodSandboxRequest) {
			r.Config.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Ipc: runtimeapi.NamespaceMode_NODE}}
			r.Config.Linux.Sysctls = map[string]string{"kernel.shm_rmid_forced": "1"}
		}, code: codes.InvalidArgument, inMsg: "kernel.shm_rmid_forced"},
		// A pod without a PID 1 makes its namespaces and cgroup parent
		// itself: the same refusals, and the undo of its own steps.
		{desc: "no PID 1: sysctl value the kernel refuses", mutate: noInit(func(r *runtimeapi.RunPodSandboxRequest) {
			r.Config.Linux.Sysctls = map[string]string{"kernel.msgmax": "1024", "net.ipv4.ip_forward": "many"}
		}), code: codes.InvalidArgument, inMsg: "net.ipv4.ip_forward"},
		{desc: "no PID 1: sysctl that does not exist", mutate: noInit(func(r *runtimeapi.RunPodSandboxRequest) {
			r.Config.Linux.Sysctls = map[string]string{"net.ipv4.no_such_sysctl": "1"}
		}), code: codes.InvalidArgument, inMsg: "net.ipv4.no_such_sysctl"},
		{desc: "no PID 1: sysctl path that escapes", mutate: noInit(func(r *runtimeapi.RunPodSandboxRequest) {
			r.Config.Linux.Sysctls = map[string]string{"net/../../../etc/passwd": "x"}
		}), code: codes.InvalidArgument},
		{desc: "no PID 1: cgroup parent that cannot be created", mutate: noInit(func(r *runtimeapi.RunPodSandboxRequest) {
			r.Config.Linux.CgroupParent = "/ketch-e2e/cgroup.procs/x"
		}), code: codes.FailedPrecondition, inMsg: "cgroup"},
		{desc: "no PID 1: failing CNI plugin", mutate: noInit(func(*runtimeapi.RunPodSandboxRequest) {}), setup: withPlugin("ketch-e2e-fail"),
			code: codes.Unavailable, inMsg: "refuses every pod"},
		{desc: "failing CNI plugin", setup: withPlugin("ketch-e2e-fail"), code: codes.Unavailable, inMsg: "refuses every pod"},
		{desc: "hanging CNI plugin", setup: withPlugin("ketch-e2e-hang"), timeout: 3 * time.Second, code: codes.DeadlineExceeded},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			req := &runtimeapi.RunPodSandboxRequest{Config: podConfig(t, "bad")}
			if tc.mutate != nil {
				tc.mutate(req)
			}
			if tc.setup != nil {
				tc.setup()
				defer func() { _ = os.WriteFile(netd, []byte(good), 0o644) }()
			}
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 30 * time.Second
			}
			start := time.Now()
			_, err := d.rt.RunPodSandbox(ctxT(t, timeout), req)
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.inMsg) {
				t.Fatalf("got %v, want %v naming %q", err, tc.code, tc.inMsg)
			}
			if took := time.Since(start); took > timeout+15*time.Second {
				t.Errorf("the failure took %v", took)
			}
			d.checkNothingLeft(t)
		})
	}
	// Every name was freed: the same pod runs now.
	id := d.runPod(t, podConfig(t, "bad"))
	if _, err := d.rt.RunPodSandbox(ctxT(t, 30*time.Second), &runtimeapi.RunPodSandboxRequest{Config: podConfig(t, "bad")}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("a second pod of the same name and attempt: %v, want AlreadyExists", err)
	}
	d.removePod(t, id)
	d.checkNothingLeft(t)
}

// checkNothingLeft: the daemon holds no pod, and the host nothing of one.
func (d *daemon) checkNothingLeft(t *testing.T) {
	t.Helper()
	// A failed RunPodSandbox undoes itself before it answers, except for
	// what the kernel frees by itself a moment later (a killed plugin's
	// processes): give that a moment.
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := d.leftovers()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("left behind: %v", left)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *daemon) leftovers() []string {
	var left []string
	for _, dir := range []string{filepath.Join(d.state, "pods"), filepath.Join(d.state, "netns")} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			left = append(left, filepath.Join(dir, e.Name()))
		}
	}
	if mounts, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mounts), d.state+"/pods") ||
		strings.Contains(string(mounts), d.state+"/netns/") {
		left = append(left, "mounts under "+d.state)
	}
	resp, err := d.rt.ListPodSandbox(ctxT(&testing.T{}, 10*time.Second), &runtimeapi.ListPodSandboxRequest{})
	if err != nil || len(resp.Items) > 0 {
		left = append(left, fmt.Sprintf("listed pods %v (%v)", resp.GetItems(), err))
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", podBridge).Output(); len(strings.TrimSpace(string(out))) > 0 {
		left = append(left, "veths: "+string(out))
	}
	ipam, _ := filepath.Glob(filepath.Join(d.dir, "ipam", "*", "10.*"))
	left = append(left, ipam...)
	for _, mnt := range cgroupMounts() {
		if dirs, _ := filepath.Glob(filepath.Join(mnt, cgroupParent, "*", "cgroup.procs")); len(dirs) > 0 {
			left = append(left, dirs...)
		}
	}
	if pids := processesOf(d.state); len(pids) > 0 {
		left = append(left, fmt.Sprintf("processes %v", pids))
	}
	if pids := processesOf("ketch-e2e-"); len(pids) > 0 {
		left = append(left, fmt.Sprintf("plugin processes %v", pids))
	}
	return left
}

// TestHostPortsAreReserved: a host port belongs to one running pod; a
// second pod that maps it is refused until the first stops, and a ketchd
// restart keeps the reservation.
func TestHostPortsAreReserved(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	withPort := func(name string) *runtimeapi.PodSandboxConfig {
		cfg := podConfig(t, name)
		cfg.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_UDP, ContainerPort: 53, HostPort: 18053}}
		return cfg
	}
	refused := func(d *daemon, name string) {
		t.Helper()
		_, err := d.rt.RunPodSandbox(ctxT(t, 30*time.Second), &runtimeapi.RunPodSandboxRequest{Config: withPort(name)})
		if status.Code(err) != codes.FailedPrecondition {
			t.Errorf("a second pod on host port 18053/udp: %v, want FailedPrecondition", err)
		}
	}
	a := d.runPod(t, withPort("first"))
	refused(d, "second")
	d.stop(t)
	d = restart(t, d)
	refused(d, "after-restart")
	d.stopPod(t, a)
	b := d.runPod(t, withPort("third"))
	for _, id := range []string{a, b} {
		d.removePod(t, id)
		d.checkPodGone(t, id)
	}
	d.checkNothingLeft(t)
}

// TestPodsSurviveRestart: ketchd restarts under running pods; they stay
// listed and running, a pod whose PID 1 died meanwhile is NOTREADY, and
// both stop and remove as usual.
func TestPodsSurviveRestart(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	live := d.runPod(t, podConfig(t, "live"))
	dying := d.runPod(t, podConfig(t, "dying"))
	liveStatus, _ := d.podStatus(t, live)
	livePID, dyingPID := d.podPID(t, live), d.podPID(t, dying)
	d.stop(t)
	if !alive(livePID) || !alive(dyingPID) {
		t.Fatal("stopping ketchd stopped its pods")
	}
	if err := syscall.Kill(dyingPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d = restart(t, d)
	st, _ := d.podStatus(t, live)
	if st.State != runtimeapi.PodSandboxState_SANDBOX_READY || st.GetNetwork().GetIp() != liveStatus.GetNetwork().GetIp() || d.podPID(t, live) != livePID {
		t.Errorf("after restart the live pod is %v with IP %q; want READY with %q and the same PID 1",
			st.State, st.GetNetwork().GetIp(), liveStatus.GetNetwork().GetIp())
	}
	waitNotReady(t, d, dying)
	if got := d.pods(t, nil); len(got) != 2 {
		t.Errorf("%d pods listed after restart, want 2", len(got))
	}
	for _, id := range []string{live, dying} {
		d.stopPod(t, id)
		d.removePod(t, id)
		d.checkPodGone(t, id)
	}
	checkBridgeEmpty(t)
}

// TestRestartCollectsLeftovers: what a crash left that no record holds (a
// pod directory, a netns pin, a container rootfs directory) is removed
// when ketchd starts; a live pod is not touched.
func TestRestartCollectsLeftovers(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	live := d.runPod(t, podConfig(t, "survivor"))
	pid := d.podPID(t, live)
	d.stop(t)
	stray := strings.Repeat("d", 64)
	if err := os.MkdirAll(filepath.Join(d.state, "pods", stray), 0o711); err != nil {
		t.Fatal(err)
	}
	pin, err := netns.Create(filepath.Join(d.state, "netns"), strings.Repeat("e", 64))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Remove(pin) })
	if err := os.MkdirAll(filepath.Join(d.state, "containers", strings.Repeat("f", 64)), 0o700); err != nil {
		t.Fatal(err)
	}
	d = restart(t, d)
	for _, p := range []string{filepath.Join(d.state, "pods", stray), pin, filepath.Join(d.state, "containers", strings.Repeat("f", 64))} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s survived the restart", p)
		}
	}
	if st, _ := d.podStatus(t, live); st.State != runtimeapi.PodSandboxState_SANDBOX_READY || !alive(pid) {
		t.Errorf("the live pod is %v (PID 1 alive: %v) after the clean-up", st.State, alive(pid))
	}
	d.removePod(t, live)
	d.checkPodGone(t, live)
}

// TestCrashMidCreate: ketchd is killed (-9) while RunPodSandbox waits on a
// CNI plugin; the next ketchd removes the half-made pod (its record,
// shim, netns, IP) and its name can be used again: no "name is reserved"
// for ever.
func TestCrashMidCreate(t *testing.T) {
	bin := t.TempDir()
	hang := filepath.Join(bin, "ketch-e2e-hang")
	// The plugin runs as the leader of its own process group (ketch's
	// plugin runner sees to it) and writes its PID when ADD starts.
	started := filepath.Join(bin, "started")
	script := "#!/bin/sh\ncase \"$CNI_COMMAND\" in\nVERSION) echo '{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"1.0.0\"]}' ;;\nADD) cat >/dev/null; echo $$ > " +
		started + "; sleep 300 ;;\n*) cat >/dev/null ;;\nesac\n"
	if err := os.WriteFile(hang, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	d := startKetchd(t, daemonOpts{network: true, extra: fmt.Sprintf("cni_bin_dirs = [%q, \"/usr/lib/cni\"]", bin)})
	netd := filepath.Join(d.dir, "net.d", "10-e2e.conflist")
	good := readFile(t, netd)
	bad := strings.Replace(good, `{"type": "loopback"}`, `{"type": "loopback"}, {"type": "ketch-e2e-hang"}`, 1)
	if err := os.WriteFile(netd, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	go func() {
		_, _ = d.rt.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: podConfig(t, "crash")})
	}()
	// Wait until the plugin hangs: the pod is half made.
	var plugin int
	deadline := time.Now().Add(10 * time.Second)
	for plugin == 0 {
		if b, err := os.ReadFile(started); err == nil {
			plugin, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		if time.Now().After(deadline) {
			t.Fatal("the hanging plugin never ran")
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.kill(t)
	// The plugin's group is ours, orphaned by the kill.
	_ = syscall.Kill(-plugin, syscall.SIGKILL)
	if err := os.WriteFile(netd, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	d = restart(t, d)
	if got := d.pods(t, nil); len(got) != 0 {
		t.Errorf("the half-made pod is listed after the restart: %v", got)
	}
	d.checkNothingLeft(t)
	id := d.runPod(t, podConfig(t, "crash")) // the name is free
	d.removePod(t, id)
	d.checkNothingLeft(t)
}

// TestUpgradeInit: a new ketch-init (an upgrade) gets a sandbox rootfs of
// its own; the old one stays while a pod runs from it and is removed at
// the first start after that pod is gone.
func TestUpgradeInit(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	old := d.runPod(t, podConfig(t, "before-upgrade"))
	rootfs := func() []string {
		dirs, _ := filepath.Glob(filepath.Join(d.root, "sandbox", "rootfs-*"))
		return dirs
	}
	before := rootfs()
	d.stop(t)
	// Another binary: the same program with a byte more.
	bin, err := os.ReadFile(filepath.Join(filepath.Dir(ketchdBin), "ketch-init"))
	if err != nil {
		t.Fatal(err)
	}
	newInit := filepath.Join(d.dir, "ketch-init")
	if err := os.WriteFile(newInit, append(bin, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(d.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "init_binary = %q\n", newInit) // under [sandbox], the last table
	f.Close()
	d = restart(t, d)
	if got := rootfs(); len(before) != 1 || len(got) != 2 {
		t.Fatalf("rootfs dirs %v before the upgrade, %v after; want one, then both", before, got)
	}
	upgraded := d.runPod(t, podConfig(t, "after-upgrade"))
	if st, _ := d.podStatus(t, old); st.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("the pod from before the upgrade is %v", st.State)
	}
	d.removePod(t, old)
	d.stop(t)
	d = restart(t, d)
	if got := rootfs(); len(got) != 1 || got[0] == before[0] {
		t.Errorf("rootfs dirs after the old pod went: %v; want only the new one (not %s)", got, before[0])
	}
	if st, _ := d.podStatus(t, upgraded); st.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("the pod from after the upgrade is %v", st.State)
	}
	d.removePod(t, upgraded)
	d.checkPodGone(t, upgraded)
}
