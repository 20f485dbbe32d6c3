//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// exec runs cmd in container id and returns its trimmed stdout+stderr and
// exit code.
func (d *daemon) exec(t *testing.T, id string, cmd ...string) (string, int32) {
	t.Helper()
	resp, err := d.rt.ExecSync(ctxT(t, 30*time.Second), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 10})
	if err != nil {
		t.Fatalf("ExecSync %v: %v", cmd, err)
	}
	return strings.TrimSpace(string(resp.Stdout) + string(resp.Stderr)), resp.ExitCode
}

// statusField is a field of /proc/self/status as the container sees it.
func (d *daemon) statusField(t *testing.T, id, key string) string {
	t.Helper()
	out, _ := d.exec(t, id, "grep", "^"+key+":", "/proc/self/status")
	_, v, _ := strings.Cut(out, ":")
	return strings.TrimSpace(v)
}

// hostCapEff is this test process's effective capability set: what a
// privileged container gets (root here lacks CAP_SYS_RESOURCE).
func hostCapEff(t *testing.T) string {
	return strings.TrimSpace(procField(t, os.Getpid(), "CapEff"))
}

// TestSysfsOfPrivilegedBeside: sysfs has one superblock per network
// namespace, so a privileged container that starts while an unprivileged
// one of its pod runs must still get a writable /sys, and the other keep
// a read-only one.
func TestSysfsOfPrivilegedBeside(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	d.mustPull(t, busybox)
	podCfg := kubeletPod(podConfig(t, "sysfs"))
	podCfg.LogDirectory = t.TempDir()
	podCfg.Linux.SecurityContext.Privileged = true
	pod := d.runPod(t, podCfg)
	plain := d.createContainer(t, pod, podCfg, containerConfig("plain", "sleep", "300"))
	d.startContainer(t, plain)
	privCfg := containerConfig("privileged", "sleep", "300")
	privCfg.Linux.SecurityContext.Privileged = true
	priv := d.createContainer(t, pod, podCfg, privCfg)
	d.startContainer(t, priv)
	probe := "touch /sys/kernel/ketch-probe 2>&1; mount | grep ' /sys '"
	if out, code := d.exec(t, priv, "sh", "-c", probe); code != 0 || strings.Contains(out, "(ro,") {
		t.Errorf("/sys of a privileged container beside an unprivileged one: %q", out)
	}
	if out, code := d.exec(t, plain, "sh", "-c", "touch /sys/kernel/ketch-probe"); code == 0 || !strings.Contains(out, "Read-only") {
		t.Errorf("/sys of the unprivileged container is writable: %d %q", code, out)
	}
	d.removePod(t, pod)
	d.checkPodGone(t, pod)
}

// TestSecurityContext runs a container per security-context field and
// checks, from inside, that the field took effect.
func TestSecurityContext(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	d.mustPull(t, busybox)
	podCfg := podConfig(t, "security")
	podCfg.LogDirectory = t.TempDir()
	podCfg.Linux.Sysctls = map[string]string{"kernel.shm_rmid_forced": "1"}
	// A privileged container needs a privileged pod, as in containerd.
	podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{Privileged: true}
	pod := d.runPod(t, podCfg)
	i64 := func(v int64) *runtimeapi.Int64Value { return &runtimeapi.Int64Value{Value: v} }
	runtimeDefault := &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
	for _, tc := range []struct {
		desc  string
		sc    func(*runtimeapi.LinuxContainerSecurityContext)
		check func(t *testing.T, id string)
	}{
		{"defaults: containerd's capabilities, no seccomp asked", nil, func(t *testing.T, id string) {
			if got := d.statusField(t, id, "CapEff"); got != "00000000a80425fb" {
				t.Errorf("CapEff %s, want the default set 00000000a80425fb", got)
			}
			if got, _ := d.exec(t, id, "id", "-u"); got != "0" {
				t.Errorf("uid %s, want the image's root", got)
			}
		}},
		{"run_as_user and run_as_group", func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.RunAsUser, sc.RunAsGroup = i64(1234), i64(1235)
		}, func(t *testing.T, id string) {
			if got, _ := d.exec(t, id, "id", "-u"); got != "1234" {
				t.Errorf("uid %s", got)
			}
			if got, _ := d.exec(t, id, "id", "-g"); got != "1235" {
				t.Errorf("gid %s", got)
			}
			if st := d.ctrStatus(t, id).GetUser().GetLinux(); st.GetUid() != 1234 || st.GetGid() != 1235 {
				t.Errorf("status user = %v", st)
			}
		}},
		{"run_as_username from the image's passwd", func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.RunAsUsername = "www-data"
		}, func(t *testing.T, id string) {
			if got, _ := d.exec(t, id, "id", "-u"); got != "33" {
				t.Errorf("uid %s, want www-data's 33", got)
			}
		}},
		{"supplemental groups", func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.RunAsUser, sc.SupplementalGroups = i64(1000), []int64{2001, 2002}
		}, func(t *testing.T, id string) {
			got, _ := d.exec(t, id, "id", "-G")
			if !strings.Contains(" "+got+" ", " 2001 ") || !strings.Contains(" "+got+" ", " 2002 ") {
				t.Errorf("groups %q lack 2001 and 2002", got)
			}
		}},
		{"privileged", func(sc *runtimeapi.LinuxContainerSecurityContext) { sc.Privileged = true }, func(t *testing.T, id string) {
			if got, want := d.statusField(t, id, "CapEff"), hostCapEff(t); got != want {
				t.Errorf("CapEff %s, want every capability ketch has, %s", got, want)
			}
			if out, code := d.exec(t, id, "sh", "-c", "touch /sys/kernel/ketch-probe 2>&1; mount | grep ' /sys '"); code != 0 || strings.Contains(out, "(ro,") {
				t.Errorf("/sys of a privileged container: %q", out)
			}
		}},
		{"capabilities added and dropped", func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN"}, DropCapabilities: []string{"CHOWN"}}
		}, func(t *testing.T, id string) {
			// a80425fb + NET_ADMIN (bit 12) - CHOWN (bit 0)
			if got := d.statusField(t, id, "CapEff"); got != "00000000a80435fa" {
				t.Errorf("CapEff %s, want 00000000a80435fa", got)
			}
			if out, code := d.exec(t, id, "chown", "1:1", "/tmp"); code == 0 {
				t.Errorf("chown without CAP_CHOWN worked: %q", out)
			}
		}},
		{"no_new_privs", func(sc *runtimeapi.LinuxContainerSecurityContext) { sc.NoNewPrivs = true }, func(t *testing.T, id string) {
			if got := d.statusField(t, id, "NoNewPrivs"); got != "1" {
				t.Errorf("NoNewPrivs %s", got)
			}
		}},
		{"readonly rootfs", func(sc *runtimeapi.LinuxContainerSecurityContext) { sc.ReadonlyRootfs = true }, func(t *testing.T, id string) {
			if out, code := d.exec(t, id, "touch", "/probe"); code == 0 || !strings.Contains(out, "Read-only file system") {
				t.Errorf("write to a read-only rootfs: %d %q", code, out)
			}
		}},
		{"masked and readonly paths", func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.MaskedPaths, sc.ReadonlyPaths = []string{"/proc/keys", "/proc/timer_list"}, []string{"/proc/sys"}
		}, func(t *testing.T, id string) {
			if out, _ := d.exec(t, id, "sh", "-c", "wc -c < /proc/timer_list"); out != "0" {
				t.Errorf("/proc/timer_list is not masked: %q", out)
			}
			if out, code := d.exec(t, id, "sh", "-c", "echo 1 > /proc/sys/kernel/shm_rmid_forced"); code == 0 {
				t.Errorf("/proc/sys is writable: %q", out)
			}
		}},
		{"seccomp RuntimeDefault", func(sc *runtimeapi.LinuxContainerSecurityContext) { sc.Seccomp = runtimeDefault }, func(t *testing.T, id string) {
			if got := d.statusField(t, id, "Seccomp"); got != "2" {
				t.Errorf("Seccomp mode %s, want 2 (filter)", got)
			}
		}},
		{"seccomp Unconfined", func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
		}, func(t *testing.T, id string) {
			if got := d.statusField(t, id, "Seccomp"); got != "0" {
				t.Errorf("Seccomp mode %s, want 0", got)
			}
		}},
		{"pod files and sysctls", nil, func(t *testing.T, id string) {
			if out, _ := d.exec(t, id, "cat", "/etc/hostname"); out != "security" {
				t.Errorf("/etc/hostname %q", out)
			}
			if out, _ := d.exec(t, id, "hostname"); out != "security" {
				t.Errorf("hostname %q", out)
			}
			if out, _ := d.exec(t, id, "cat", "/proc/sys/kernel/shm_rmid_forced"); out != "1" {
				t.Errorf("pod sysctl in the container: %q", out)
			}
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cfg := containerConfig(fmt.Sprintf("sc%d", time.Now().UnixNano()%1e9), "sleep", "300")
			if tc.sc != nil {
				tc.sc(cfg.Linux.SecurityContext)
			}
			id := d.createContainer(t, pod, podCfg, cfg)
			d.startContainer(t, id)
			tc.check(t, id)
			if _, err := d.rt.RemoveContainer(ctxT(t, 30*time.Second), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
				t.Fatal(err)
			}
			d.checkContainerGone(t, id)
		})
	}
	d.removePod(t, pod)
	d.checkPodGone(t, pod)
}

// TestMountsAndShm: bind mounts read-write, read-only and recursive
// read-only, host-to-container propagation, a device, and the pod's
// /dev/shm shared by its containers.
func TestMountsAndShm(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	d.mustPull(t, busybox)
	pod, podCfg, _ := d.podWithLogs(t, "mounts")

	rw, ro, slave := t.TempDir(), t.TempDir(), t.TempDir()
	// The propagation source must be a shared mount: bind it on itself.
	for _, dir := range []string{ro, slave} {
		if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("", dir, "", syscall.MS_SHARED, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	}
	sub := filepath.Join(ro, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", sub, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(sub, syscall.MNT_DETACH) })

	cfg := containerConfig("m", "sleep", "300")
	missing := filepath.Join(t.TempDir(), "made", "by", "ketch")
	cfg.Mounts = []*runtimeapi.Mount{
		{HostPath: rw, ContainerPath: "/rw"},
		// kubelet's hostPath without a type: the runtime makes the directory.
		{HostPath: missing, ContainerPath: "/missing"},
		{HostPath: ro, ContainerPath: "/rro", Readonly: true, RecursiveReadOnly: true},
		{HostPath: slave, ContainerPath: "/slave", Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
	}
	cfg.Devices = []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/ketch-null", Permissions: "rwm"}}
	id := d.createContainer(t, pod, podCfg, cfg)
	d.startContainer(t, id)
	other := d.createContainer(t, pod, podCfg, containerConfig("other", "sleep", "300"))
	d.startContainer(t, other)

	if _, code := d.exec(t, id, "sh", "-c", "echo from-container > /rw/f"); code != 0 || readFile(t, filepath.Join(rw, "f")) != "from-container\n" {
		t.Error("a write to a read-write bind mount did not reach the host")
	}
	if fi, err := os.Stat(missing); err != nil || !fi.IsDir() {
		t.Errorf("the missing mount source was not made a directory: %v", err)
	}
	if st, _ := d.rt.ContainerStatus(ctxT(t, 10*time.Second), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true}); !strings.Contains(st.GetInfo()["info"], `"runtimeSpec"`) {
		t.Error("verbose status has no runtime spec")
	}
	for _, p := range []string{"/rro/x", "/rro/sub/x"} {
		if out, code := d.exec(t, id, "touch", p); code == 0 || !strings.Contains(out, "Read-only") {
			t.Errorf("touch %s in a recursive read-only mount: %d %q", p, code, out)
		}
	}
	late := filepath.Join(slave, "late")
	if err := os.Mkdir(late, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", late, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(late, syscall.MNT_DETACH) })
	if out, _ := d.exec(t, id, "sh", "-c", "grep ' /slave/late ' /proc/self/mountinfo | wc -l"); out != "1" {
		t.Errorf("a mount made on the host after start did not propagate (rslave): %q", out)
	}
	if out, code := d.exec(t, id, "sh", "-c", "test -c /dev/ketch-null && echo ok > /dev/ketch-null && echo yes"); code != 0 || out != "yes" {
		t.Errorf("device /dev/ketch-null: %d %q", code, out)
	}
	if _, code := d.exec(t, id, "sh", "-c", "echo shared > /dev/shm/probe"); code != 0 {
		t.Fatal("cannot write the pod's /dev/shm")
	}
	if out, _ := d.exec(t, other, "cat", "/dev/shm/probe"); out != "shared" {
		t.Errorf("the pod's second container reads %q from /dev/shm", out)
	}
	d.removePod(t, pod)
	d.checkPodGone(t, pod)
	d.checkContainerGone(t, id)
	d.checkContainerGone(t, other)
}
