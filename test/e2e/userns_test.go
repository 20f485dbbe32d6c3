//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestUserNamespacePod: a pod with a user namespace of its own (kubelet's
// hostUsers: false). Its PID 1 runs in it and it owns the pod's network
// namespace; a container joins it, sees the mapping, and as its root can
// write to its rootfs (an idmapped overlay), whose new files are the mapped
// root's on the node. A container asking for the node's user namespace in
// that pod is refused before anything is made; nothing is left after.
func TestUserNamespacePod(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	d.mustPull(t, busybox)
	mapping := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 100000, Length: 65536}}
	userns := &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: mapping, Gids: mapping}
	podCfg := podConfig(t, "userns")
	podCfg.LogDirectory = t.TempDir()
	podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: userns},
	}
	pod := d.runPod(t, podCfg)

	pid := d.podPID(t, pod)
	wantMap := regexp.MustCompile(`^\s*0\s+100000\s+65536\n$`)
	for _, f := range []string{"uid_map", "gid_map"} {
		if m := readFile(t, filepath.Join("/proc", strconv.Itoa(pid), f)); !wantMap.MatchString(m) {
			t.Errorf("the pod's PID 1 %s = %q", f, m)
		}
	}
	podUserns := nsInode(t, filepath.Join("/proc", strconv.Itoa(pid), "ns/user"))
	if podUserns == nsInode(t, "/proc/self/ns/user") {
		t.Fatal("the pod's PID 1 runs in the node's user namespace")
	}
	if owner := netnsOwner(t, filepath.Join(d.state, "netns", pod)); owner != podUserns {
		t.Errorf("the pod's network namespace belongs to user namespace %d, not the pod's %d", owner, podUserns)
	}

	cfg := containerConfig("main", "sh", "-c", "cat /proc/self/uid_map; id -u; touch /tmp/x && echo wrote")
	cfg.Linux.SecurityContext.NamespaceOptions.UsernsOptions = userns // kubelet repeats the pod's
	id := d.createContainer(t, pod, podCfg, cfg)
	d.startContainer(t, id)
	st := d.waitExited(t, id, 30*time.Second)
	log := readLog(t, st.LogPath)
	if st.ExitCode != 0 || !regexp.MustCompile(`stdout F\s+0\s+100000\s+65536\n`).MatchString(log) ||
		!strings.Contains(log, " stdout F 0\n") || !strings.Contains(log, " stdout F wrote\n") {
		t.Errorf("exit %d, log:\n%s", st.ExitCode, log)
	}
	// A second container joins the same namespace, and so does an exec.
	sleeper := containerConfig("sleeper", "sleep", "300")
	sid := d.createContainer(t, pod, podCfg, sleeper)
	d.startContainer(t, sid)
	if out, code := d.exec(t, sid, "cat", "/proc/self/uid_map"); code != 0 || !wantMap.MatchString(out+"\n") {
		t.Errorf("exec in the pod's user namespace: %q, exit %d", out, code)
	}
	if out, code := d.exec(t, sid, "readlink", "/proc/1/ns/user"); code != 0 || out != fmt.Sprintf("user:[%d]", podUserns) {
		t.Errorf("the second container's user namespace is %q (exit %d), want the pod's %d", out, code, podUserns)
	}
	// What the container's root writes is the mapped root's on the node
	// (seen while the container runs: an exited one's rootfs is unmounted).
	if _, code := d.exec(t, sid, "touch", "/tmp/x"); code != 0 {
		t.Errorf("touch in the container: exit %d", code)
	}
	var fi syscall.Stat_t
	if err := syscall.Stat(filepath.Join(d.state, "containers", sid, "rootfs/tmp/x"), &fi); err != nil || fi.Uid != 100000 || fi.Gid != 100000 {
		t.Errorf("the file the container's root wrote is %d:%d on the node (%v), want 100000:100000", fi.Uid, fi.Gid, err)
	}

	node := containerConfig("node", "true")
	node.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}
	_, err := d.rt.CreateContainer(ctxT(t, 30*time.Second), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: node, SandboxConfig: podCfg})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("a container asking for the node's user namespace: %v, want InvalidArgument", err)
	}
	if got := d.containers(t, &runtimeapi.ContainerFilter{PodSandboxId: pod}); len(got) != 2 {
		t.Errorf("containers of the pod after the refused one: %v", got)
	}

	if _, err := d.rt.RemoveContainer(ctxT(t, 30*time.Second), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	d.checkContainerGone(t, id)
	d.stopPod(t, pod)
	d.removePod(t, pod)
	d.checkContainerGone(t, sid)
	d.checkNoContainerLeft(t)
	d.checkPodGone(t, pod)
}

// netnsOwner is the inode of the user namespace that owns the network
// namespace pinned at path.
func netnsOwner(t *testing.T, path string) uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_USERNS)
	if err != nil {
		t.Fatalf("owner of netns %s: %v", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestUserNamespaceHostNetworkPod: a user namespace of the pod's own on the
// node's network, where sysfs cannot be mounted: the container gets the
// node's /sys bound read-only, and runs.
func TestUserNamespaceHostNetworkPod(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	d.mustPull(t, busybox)
	mapping := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 100000, Length: 65536}}
	podCfg := podConfig(t, "userns-hostnet")
	podCfg.LogDirectory = t.TempDir()
	podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
		Network:       runtimeapi.NamespaceMode_NODE,
		UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: mapping, Gids: mapping},
	}}
	pod := d.runPod(t, podCfg)
	id := d.createContainer(t, pod, podCfg, containerConfig("main", "sh", "-c",
		"cat /proc/self/uid_map; test -e /sys/class/net/lo && echo sys; touch /sys/x 2>/dev/null || echo read-only"))
	d.startContainer(t, id)
	st := d.waitExited(t, id, 30*time.Second)
	log := readLog(t, st.LogPath)
	if st.ExitCode != 0 || !regexp.MustCompile(`stdout F\s+0\s+100000\s+65536\n`).MatchString(log) ||
		!strings.Contains(log, " stdout F sys\n") || !strings.Contains(log, " stdout F read-only\n") {
		t.Errorf("exit %d, log:\n%s", st.ExitCode, log)
	}
	d.removePod(t, pod)
	d.checkContainerGone(t, id)
	d.checkPodGone(t, pod)
}
