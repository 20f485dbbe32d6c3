package oci

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/cgroups"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/opencontainers/runc/libcontainer/apparmor"
	"github.com/opencontainers/runc/libcontainer/configs/validate"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The image's users and groups, shaped like critest's
// "image-predefined-group" image: default-user (1000) is a member of
// group-defined-in-image (50000) and of its own group, which must not be
// counted twice.
const (
	testPasswd = `root:x:0:0:root:/root:/bin/sh
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
default-user:x:1000:1000::/home/default-user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
`
	testGroup = `root:x:0:
www-data:x:33:
video:x:44:www-data
default-user:x:1000:default-user
group-defined-in-image:x:50000:default-user
nogroup:x:65534:
`
)

func writeFile(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// testInput is a container of a pod with its own namespaces, over a rootfs
// with the users above and the pod's files in place.
func testInput(t *testing.T) Input {
	t.Helper()
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	writeFile(t, filepath.Join(rootfs, "etc/passwd"), testPasswd)
	writeFile(t, filepath.Join(rootfs, "etc/group"), testGroup)
	pod := filepath.Join(dir, "pod")
	for _, f := range []string{"hosts", "resolv.conf", "hostname"} {
		writeFile(t, filepath.Join(pod, f), f+"\n")
	}
	if err := os.MkdirAll(filepath.Join(pod, "shm"), 0o755); err != nil {
		t.Fatal(err)
	}
	return Input{
		ID: "c1",
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
			Image:    &runtimeapi.ImageSpec{Image: "docker.io/library/busybox:latest"},
			Command:  []string{"/bin/app"},
		},
		Pod: &runtimeapi.PodSandboxConfig{
			Metadata: &runtimeapi.PodSandboxMetadata{Name: "pod", Namespace: "ns", Uid: "uid-1"},
			Hostname: "pod-host",
		},
		Rootfs:         rootfs,
		SandboxNS:      pinsOf(4242),
		NetNSPath:      "/run/ketch/netns/p1",
		HostsPath:      filepath.Join(pod, "hosts"),
		ResolvConfPath: filepath.Join(pod, "resolv.conf"),
		HostnamePath:   filepath.Join(pod, "hostname"),
		ShmPath:        filepath.Join(pod, "shm"),
	}
}

// sc returns the input's security context, creating it.
func sc(in *Input) *runtimeapi.LinuxContainerSecurityContext {
	if in.Config.Linux == nil {
		in.Config.Linux = &runtimeapi.LinuxContainerConfig{}
	}
	if in.Config.Linux.SecurityContext == nil {
		in.Config.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{}
	}
	return in.Config.Linux.SecurityContext
}

func nsOpts(in *Input) *runtimeapi.NamespaceOption {
	s := sc(in)
	if s.NamespaceOptions == nil {
		s.NamespaceOptions = &runtimeapi.NamespaceOption{}
	}
	return s.NamespaceOptions
}

func privileged(in *Input) {
	sc(in).Privileged = true
	in.Pod.Linux = &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{Privileged: true}}
}

func resourcesOf(in *Input) *runtimeapi.LinuxContainerResources {
	sc(in)
	if in.Config.Linux.Resources == nil {
		in.Config.Linux.Resources = &runtimeapi.LinuxContainerResources{}
	}
	return in.Config.Linux.Resources
}

// build makes the spec of testInput changed by edit, failing the test on
// error.
func build(t *testing.T, edit func(*Input)) *specs.Spec {
	t.Helper()
	s, err := buildErr(t, edit)
	if err != nil {
		t.Fatalf("Spec: %v", err)
	}
	return s
}

func buildErr(t *testing.T, edit func(*Input)) (*specs.Spec, error) {
	t.Helper()
	in := testInput(t)
	if edit != nil {
		edit(&in)
	}
	return Spec(in)
}

// checkErr compares an error with a wanted errdefs class (nil: success).
func checkErr(t *testing.T, err error, want func(error) bool) bool {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != nil && err == nil:
		t.Fatal("no error, want one")
	case want != nil && !want(err):
		t.Fatalf("error %v is not of the wanted class", err)
	}
	return err == nil
}

func TestCommand(t *testing.T) {
	for _, tc := range []struct {
		desc          string
		command, args []string
		img           ocispec.ImageConfig
		want          []string
		wantErr       func(error) bool
	}{
		{desc: "image entrypoint and cmd", img: ocispec.ImageConfig{Entrypoint: []string{"/ep"}, Cmd: []string{"a"}}, want: []string{"/ep", "a"}},
		{desc: "config args replace the image cmd", args: []string{"b"}, img: ocispec.ImageConfig{Entrypoint: []string{"/ep"}, Cmd: []string{"a"}}, want: []string{"/ep", "b"}},
		{desc: "config command drops entrypoint and cmd", command: []string{"/c"}, img: ocispec.ImageConfig{Entrypoint: []string{"/ep"}, Cmd: []string{"a"}}, want: []string{"/c"}},
		{desc: "config command and args", command: []string{"/c"}, args: []string{"x", "y"}, img: ocispec.ImageConfig{Cmd: []string{"a"}}, want: []string{"/c", "x", "y"}},
		{desc: "empty entrypoint counts as none", img: ocispec.ImageConfig{Entrypoint: []string{""}, Cmd: []string{"/bin/sh"}}, want: []string{"/bin/sh"}},
		{desc: "image cmd only", img: ocispec.ImageConfig{Cmd: []string{"/bin/sh", "-c", "true"}}, want: []string{"/bin/sh", "-c", "true"}},
		{desc: "args without any command", args: []string{"/bin/true"}, want: []string{"/bin/true"}},
		{desc: "nothing to run", img: ocispec.ImageConfig{Entrypoint: []string{""}}, wantErr: errdefs.IsInvalidArgument},
		{desc: "empty program name", command: []string{""}, wantErr: errdefs.IsInvalidArgument},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := Command(&runtimeapi.ContainerConfig{Command: tc.command, Args: tc.args}, tc.img)
			if checkErr(t, err, tc.wantErr) && !slices.Equal(got, tc.want) {
				t.Errorf("argv %q, want %q", got, tc.want)
			}
		})
	}
}

func TestEnv(t *testing.T) {
	for _, tc := range []struct {
		desc     string
		imageEnv []string
		envs     []*runtimeapi.KeyValue
		hostname string
		want     []string
		wantErr  func(error) bool
	}{
		{desc: "default PATH and the pod's hostname", want: []string{DefaultPath, "HOSTNAME=pod-host"}},
		{desc: "image PATH replaces the default in place", imageEnv: []string{"PATH=/x", "A=1"}, want: []string{"PATH=/x", "HOSTNAME=pod-host", "A=1"}},
		{
			desc: "config overrides image by name, order kept", imageEnv: []string{"A=1", "B=2"},
			envs: []*runtimeapi.KeyValue{{Key: "A", Value: []byte("3")}, {Key: "C", Value: []byte("4")}},
			want: []string{DefaultPath, "HOSTNAME=pod-host", "A=3", "B=2", "C=4"},
		},
		{desc: "config may override HOSTNAME", envs: []*runtimeapi.KeyValue{{Key: "HOSTNAME", Value: []byte("h")}}, want: []string{DefaultPath, "HOSTNAME=h"}},
		{desc: "image entry without = unsets", imageEnv: []string{"A=1", "A"}, want: []string{DefaultPath, "HOSTNAME=pod-host"}},
		{desc: "empty value is kept", envs: []*runtimeapi.KeyValue{{Key: "E"}}, want: []string{DefaultPath, "HOSTNAME=pod-host", "E="}},
		{desc: "empty name", envs: []*runtimeapi.KeyValue{{Key: ""}}, wantErr: errdefs.IsInvalidArgument},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s, err := buildErr(t, func(in *Input) {
				in.Image.Env = tc.imageEnv
				in.Config.Envs = tc.envs
			})
			if checkErr(t, err, tc.wantErr) && !slices.Equal(s.Process.Env, tc.want) {
				t.Errorf("env %q, want %q", s.Process.Env, tc.want)
			}
		})
	}
	t.Run("no pod hostname is the node's", func(t *testing.T) {
		host, err := os.Hostname()
		if err != nil {
			t.Fatal(err)
		}
		s := build(t, func(in *Input) { in.Pod.Hostname = "" })
		if !slices.Contains(s.Process.Env, "HOSTNAME="+host) {
			t.Errorf("env %q lacks HOSTNAME=%s", s.Process.Env, host)
		}
	})
}

func TestWorkingDir(t *testing.T) {
	for _, tc := range []struct {
		desc, config, image, want string
		wantErr                   func(error) bool
	}{
		{desc: "config wins", config: "/c", image: "/i", want: "/c"},
		{desc: "image", image: "/i", want: "/i"},
		{desc: "default", want: "/"},
		{desc: "relative", config: "c", wantErr: errdefs.IsInvalidArgument},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s, err := buildErr(t, func(in *Input) {
				in.Config.WorkingDir = tc.config
				in.Image.WorkingDir = tc.image
			})
			if checkErr(t, err, tc.wantErr) && s.Process.Cwd != tc.want {
				t.Errorf("cwd %q, want %q", s.Process.Cwd, tc.want)
			}
		})
	}
}

func TestUser(t *testing.T) {
	uid := func(v int64) *runtimeapi.Int64Value { return &runtimeapi.Int64Value{Value: v} }
	for _, tc := range []struct {
		desc      string
		sc        *runtimeapi.LinuxContainerSecurityContext
		imageUser string
		want      specs.User
		wantErr   func(error) bool
	}{
		{desc: "no user is root", want: specs.User{UID: 0, GID: 0, AdditionalGids: []uint32{0}}},
		{desc: "image user name with a group membership", imageUser: "www-data", want: specs.User{UID: 33, GID: 33, AdditionalGids: []uint32{33, 44}}},
		{desc: "image uid", imageUser: "1000", want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 50000}}},
		{desc: "image name:group", imageUser: "default-user:www-data", want: specs.User{UID: 1000, GID: 33, AdditionalGids: []uint32{33, 50000}}},
		{desc: "image uid:gid", imageUser: "1000:44", want: specs.User{UID: 1000, GID: 44, AdditionalGids: []uint32{44, 50000}}},
		{desc: "uid not in passwd has gid 0", imageUser: "4242", want: specs.User{UID: 4242, GID: 0, AdditionalGids: []uint32{0}}},
		{desc: "run_as_user overrides the image", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: uid(33)}, imageUser: "1000", want: specs.User{UID: 33, GID: 33, AdditionalGids: []uint32{33, 44}}},
		{desc: "run_as_username", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "default-user"}, want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 50000}}},
		{desc: "run_as_username wins over run_as_user", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "www-data", RunAsUser: uid(1000)}, want: specs.User{UID: 33, GID: 33, AdditionalGids: []uint32{33, 44}}},
		{desc: "run_as_group replaces the primary group", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: uid(1000), RunAsGroup: uid(2000)}, want: specs.User{UID: 1000, GID: 2000, AdditionalGids: []uint32{2000, 50000}}},
		{
			desc: "merge policy: critest's id -G is 1000 1234 50000",
			sc:   &runtimeapi.LinuxContainerSecurityContext{RunAsUser: uid(1000), SupplementalGroups: []int64{1234}},
			want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 1234, 50000}},
		},
		{
			desc: "strict policy: only the config's groups",
			sc:   &runtimeapi.LinuxContainerSecurityContext{RunAsUser: uid(1000), SupplementalGroups: []int64{1234}, SupplementalGroupsPolicy: runtimeapi.SupplementalGroupsPolicy_Strict},
			want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 1234}},
		},
		{desc: "supplemental groups are sorted and deduplicated", sc: &runtimeapi.LinuxContainerSecurityContext{SupplementalGroups: []int64{7, 3, 7, 0}}, want: specs.User{AdditionalGids: []uint32{0, 3, 7}}},
		{desc: "unknown user name", imageUser: "ghost", wantErr: errdefs.IsNotFound},
		{desc: "unknown run_as_username", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "ghost"}, wantErr: errdefs.IsNotFound},
		{desc: "unknown group name", imageUser: "1000:ghosts", wantErr: errdefs.IsNotFound},
		{desc: "run_as_group without a user", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsGroup: uid(5)}, wantErr: errdefs.IsInvalidArgument},
		{desc: "three parts", imageUser: "a:b:c", wantErr: errdefs.IsInvalidArgument},
		{desc: "uid over MaxInt32", imageUser: "4294967296", wantErr: errdefs.IsInvalidArgument},
		{desc: "negative run_as_user", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: uid(-1)}, wantErr: errdefs.IsInvalidArgument},
		{desc: "negative supplemental group", sc: &runtimeapi.LinuxContainerSecurityContext{SupplementalGroups: []int64{-5}}, wantErr: errdefs.IsInvalidArgument},
		{desc: "unknown policy", sc: &runtimeapi.LinuxContainerSecurityContext{SupplementalGroupsPolicy: 9}, wantErr: errdefs.IsInvalidArgument},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s, err := buildErr(t, func(in *Input) {
				in.Image.User = tc.imageUser
				if tc.sc != nil {
					in.Config.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: tc.sc}
				}
			})
			if checkErr(t, err, tc.wantErr) {
				checkUser(t, s.Process.User, tc.want)
			}
		})
	}
}

func checkUser(t *testing.T, got, want specs.User) {
	t.Helper()
	if got.UID != want.UID || got.GID != want.GID || !slices.Equal(got.AdditionalGids, want.AdditionalGids) {
		t.Errorf("user %d:%d %v, want %d:%d %v", got.UID, got.GID, got.AdditionalGids, want.UID, want.GID, want.AdditionalGids)
	}
}

// The image's files are read as the container sees them: a symlink in the
// image resolves inside the rootfs, never to the node's own files.
func TestUserFilesStayInRootfs(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		target string
	}{
		{desc: "absolute symlink", target: "/usr/lib/passwd"},
		{desc: "relative symlink climbing out", target: "../../../../../../../../usr/lib/passwd"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s := build(t, func(in *Input) {
				p := filepath.Join(in.Rootfs, "etc/passwd")
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(tc.target, p); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(in.Rootfs, "usr/lib/passwd"), "linked:x:7:8::/:/bin/sh\n")
				in.Image.User = "linked"
			})
			checkUser(t, s.Process.User, specs.User{UID: 7, GID: 8, AdditionalGids: []uint32{8}})
		})
	}
	t.Run("a FIFO is refused, not read", func(t *testing.T) {
		_, err := buildErr(t, func(in *Input) {
			p := filepath.Join(in.Rootfs, "etc/group")
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mkfifo(p, 0o644); err != nil {
				t.Skipf("mkfifo: %v", err)
			}
		})
		checkErr(t, err, errdefs.IsInvalidArgument)
	})
	t.Run("no passwd: uids work, names do not", func(t *testing.T) {
		s := build(t, func(in *Input) {
			_ = os.Remove(filepath.Join(in.Rootfs, "etc/passwd"))
			in.Image.User = "5"
		})
		checkUser(t, s.Process.User, specs.User{UID: 5, GID: 0, AdditionalGids: []uint32{0}})
		_, err := buildErr(t, func(in *Input) {
			_ = os.Remove(filepath.Join(in.Rootfs, "etc/passwd"))
			in.Image.User = "www-data"
		})
		checkErr(t, err, errdefs.IsNotFound)
	})
}

func TestCapabilities(t *testing.T) {
	own, err := ownCapabilities()
	if err != nil {
		t.Fatal(err)
	}
	ownBut := func(c string) []string {
		return slices.DeleteFunc(slices.Clone(own), func(x string) bool { return x == c })
	}
	caps := func(add, drop, ambient []string) func(*Input) {
		return func(in *Input) {
			sc(in).Capabilities = &runtimeapi.Capability{AddCapabilities: add, DropCapabilities: drop, AddAmbientCapabilities: ambient}
		}
	}
	for _, tc := range []struct {
		desc        string
		edit        func(*Input)
		want        []string
		wantAmbient []string
	}{
		{desc: "no security context", edit: func(in *Input) { in.Config.Linux = nil }, want: defaultCapabilities},
		{desc: "default", edit: caps(nil, nil, nil), want: defaultCapabilities},
		{desc: "add with and without prefix", edit: caps([]string{"NET_ADMIN", "cap_sys_time"}, nil, nil), want: append(slices.Clone(defaultCapabilities), "CAP_NET_ADMIN", "CAP_SYS_TIME")},
		{desc: "drop", edit: caps(nil, []string{"NET_RAW"}, nil), want: slices.DeleteFunc(slices.Clone(defaultCapabilities), func(c string) bool { return c == "CAP_NET_RAW" })},
		{desc: "add ALL", edit: caps([]string{"ALL"}, nil, nil), want: own},
		{desc: "add ALL, drop one", edit: caps([]string{"all"}, []string{"CHOWN"}, nil), want: ownBut("CAP_CHOWN")},
		{desc: "drop ALL", edit: caps(nil, []string{"ALL"}, nil), want: nil},
		{desc: "drop ALL, add one", edit: caps([]string{"CHOWN"}, []string{"ALL"}, nil), want: []string{"CAP_CHOWN"}},
		{desc: "ambient goes into every set", edit: caps(nil, nil, []string{"NET_ADMIN"}), want: append(slices.Clone(defaultCapabilities), "CAP_NET_ADMIN"), wantAmbient: []string{"CAP_NET_ADMIN"}},
		{desc: "drop beats ambient", edit: caps(nil, []string{"NET_ADMIN"}, []string{"NET_ADMIN"}), want: defaultCapabilities},
		{desc: "privileged ignores add and drop", edit: func(in *Input) { privileged(in); caps(nil, []string{"ALL"}, nil)(in) }, want: own},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			c := build(t, tc.edit).Process.Capabilities
			if c == nil {
				t.Fatal("capabilities are nil")
			}
			for name, set := range map[string][]string{"bounding": c.Bounding, "effective": c.Effective, "permitted": c.Permitted} {
				if !sameSet(set, tc.want) {
					t.Errorf("%s %v, want %v", name, set, tc.want)
				}
			}
			if !sameSet(c.Ambient, tc.wantAmbient) || !sameSet(c.Inheritable, tc.wantAmbient) {
				t.Errorf("ambient %v, inheritable %v, want both %v", c.Ambient, c.Inheritable, tc.wantAmbient)
			}
		})
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestProcessFlags(t *testing.T) {
	s := build(t, func(in *Input) {
		in.Config.Tty = true
		sc(in).NoNewPrivs = true
		sc(in).ReadonlyRootfs = true
		resourcesOf(in).OomScoreAdj = 500
	})
	if !s.Process.Terminal || !s.Process.NoNewPrivileges || !s.Root.Readonly {
		t.Errorf("terminal %v, no_new_privileges %v, readonly root %v: want all true", s.Process.Terminal, s.Process.NoNewPrivileges, s.Root.Readonly)
	}
	if s.Process.OOMScoreAdj == nil || *s.Process.OOMScoreAdj != 500 {
		t.Errorf("oom_score_adj %v, want 500", s.Process.OOMScoreAdj)
	}
	if s.Process.Rlimits != nil || s.Hostname != "" || s.Linux.Sysctl != nil {
		t.Errorf("rlimits %v, hostname %q, sysctls %v: want none", s.Process.Rlimits, s.Hostname, s.Linux.Sysctl)
	}
	in := testInput(t)
	if s, err := Spec(in); err != nil || s.Root.Path != in.Rootfs || s.Root.Readonly || s.Process.NoNewPrivileges || s.Process.OOMScoreAdj != nil {
		t.Errorf("defaults: %v; want root %s read-write, new privileges allowed, no oom_score_adj", err, in.Rootfs)
	}
	_, err := buildErr(t, func(in *Input) { resourcesOf(in).OomScoreAdj = 1001 })
	checkErr(t, err, errdefs.IsInvalidArgument)
}

func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		desc string
		edit func(*Input)
	}{
		{desc: "no config", edit: func(in *Input) { in.Config = nil }},
		{desc: "no pod", edit: func(in *Input) { in.Pod = nil }},
		{desc: "id with a slash", edit: func(in *Input) { in.ID = "a/b" }},
		{desc: "relative rootfs", edit: func(in *Input) { in.Rootfs = "rootfs" }},
		{desc: "relative host device", edit: func(in *Input) {
			in.Config.Devices = []*runtimeapi.Device{{HostPath: "dev/null", Permissions: "r"}}
		}},
		{desc: "privileged container in an unprivileged pod", edit: func(in *Input) { sc(in).Privileged = true }},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := buildErr(t, tc.edit)
			checkErr(t, err, errdefs.IsInvalidArgument)
		})
	}
}

func destinations(ms []specs.Mount) []string {
	var d []string
	for _, m := range ms {
		d = append(d, m.Destination)
	}
	return d
}

func mountAt(t *testing.T, s *specs.Spec, dst string) specs.Mount {
	t.Helper()
	for _, m := range s.Mounts {
		if m.Destination == dst {
			return m
		}
	}
	t.Fatalf("no mount at %s in %v", dst, destinations(s.Mounts))
	return specs.Mount{}
}

func TestDefaultMounts(t *testing.T) {
	in := testInput(t)
	s := build(t, func(i *Input) { *i = in })
	want := []string{"/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/dev/shm"}
	if got := destinations(s.Mounts); !slices.Equal(got, want) {
		t.Fatalf("mounts %v, want %v", got, want)
	}
	for _, tc := range []struct {
		dst, typ, src string
		opts          []string
	}{
		{"/dev/pts", "devpts", "devpts", []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{"/dev", "tmpfs", "tmpfs", []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		// Read-write, made read-only by a bind remount (below).
		{"/sys", "sysfs", "sysfs", []string{"nosuid", "noexec", "nodev", "rw"}},
		{"/etc/hosts", "bind", in.HostsPath, []string{"rbind", "rprivate", "rw"}},
		{"/etc/resolv.conf", "bind", in.ResolvConfPath, []string{"rbind", "rprivate", "rw"}},
		{"/etc/hostname", "bind", in.HostnamePath, []string{"rbind", "rprivate", "rw"}},
		{"/dev/shm", "bind", in.ShmPath, []string{"rbind", "rprivate", "rw", "nosuid", "nodev", "noexec"}},
	} {
		m := mountAt(t, s, tc.dst)
		if m.Type != tc.typ || m.Source != tc.src || !slices.Equal(m.Options, tc.opts) {
			t.Errorf("%s: %s %s %v, want %s %s %v", tc.dst, m.Type, m.Source, m.Options, tc.typ, tc.src, tc.opts)
		}
	}
	if cg := mountAt(t, s, "/sys/fs/cgroup"); cg.Type != "cgroup" || !slices.Contains(cg.Options, "ro") {
		t.Errorf("cgroup mount %s %v, want a read-only cgroup", cg.Type, cg.Options)
	}
	if s.Linux.RootfsPropagation != "" {
		t.Errorf("rootfs propagation %q, want none", s.Linux.RootfsPropagation)
	}
}

func TestPodFileMounts(t *testing.T) {
	t.Run("read-only rootfs makes the pod files read-only, not /dev/shm", func(t *testing.T) {
		s := build(t, func(in *Input) { sc(in).ReadonlyRootfs = true })
		for _, dst := range []string{"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"} {
			if m := mountAt(t, s, dst); !slices.Contains(m.Options, "ro") {
				t.Errorf("%s options %v, want ro", dst, m.Options)
			}
		}
		if m := mountAt(t, s, "/dev/shm"); !slices.Contains(m.Options, "rw") {
			t.Errorf("/dev/shm options %v, want rw", m.Options)
		}
	})
	t.Run("no shm path gives a private tmpfs", func(t *testing.T) {
		s := build(t, func(in *Input) { in.ShmPath = "" })
		if m := mountAt(t, s, "/dev/shm"); m.Type != "tmpfs" || !slices.Contains(m.Options, "mode=1777") {
			t.Errorf("/dev/shm %s %v, want the default tmpfs", m.Type, m.Options)
		}
	})
	t.Run("empty paths are skipped", func(t *testing.T) {
		s := build(t, func(in *Input) { in.HostsPath, in.ResolvConfPath, in.HostnamePath = "", "", "" })
		for _, d := range destinations(s.Mounts) {
			if filepath.Dir(d) == "/etc" {
				t.Errorf("unexpected mount at %s", d)
			}
		}
	})
	t.Run("a config mount replaces the pod's hosts file", func(t *testing.T) {
		own := filepath.Join(t.TempDir(), "my-hosts")
		writeFile(t, own, "127.0.0.1 me\n")
		s := build(t, func(in *Input) {
			in.Config.Mounts = []*runtimeapi.Mount{{ContainerPath: "/etc/hosts/", HostPath: own, Readonly: true}}
		})
		var n int
		for _, m := range s.Mounts {
			if filepath.Clean(m.Destination) == "/etc/hosts" {
				n++
				if m.Source != own || !slices.Contains(m.Options, "ro") {
					t.Errorf("/etc/hosts from %s %v, want %s ro", m.Source, m.Options, own)
				}
			}
		}
		if n != 1 {
			t.Errorf("%d mounts at /etc/hosts, want 1", n)
		}
	})
	t.Run("a named pod file that is missing", func(t *testing.T) {
		_, err := buildErr(t, func(in *Input) { in.ResolvConfPath = filepath.Join(t.TempDir(), "gone") })
		checkErr(t, err, errdefs.IsNotFound)
	})
}

// fakeMounts makes every host path look as if it were on a mount with the
// given optional fields ("shared:1", "master:2", or "").
func fakeMounts(t *testing.T, optional string) {
	t.Helper()
	old := mountOf
	mountOf = func(string) (*mountinfo.Info, error) {
		return &mountinfo.Info{Mountpoint: "/", Optional: optional}, nil
	}
	t.Cleanup(func() { mountOf = old })
}

func TestConfigMounts(t *testing.T) {
	for _, tc := range []struct {
		desc        string
		hostMount   string // the host mount's propagation
		m           *runtimeapi.Mount
		wantOpts    []string
		wantRootfs  string
		wantErr     func(error) bool
		wantCreated bool
	}{
		{desc: "read-write", m: &runtimeapi.Mount{}, wantOpts: []string{"rbind", "rprivate", "rw"}},
		{desc: "read-only", m: &runtimeapi.Mount{Readonly: true}, wantOpts: []string{"rbind", "rprivate", "ro"}},
		{desc: "recursive read-only", m: &runtimeapi.Mount{Readonly: true, RecursiveReadOnly: true}, wantOpts: []string{"rbind", "rprivate", "rro"}},
		{desc: "recursive read-only needs readonly", m: &runtimeapi.Mount{RecursiveReadOnly: true}, wantErr: errdefs.IsInvalidArgument},
		{
			desc: "recursive read-only needs private propagation", hostMount: "shared:1",
			m:       &runtimeapi.Mount{Readonly: true, RecursiveReadOnly: true, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
			wantErr: errdefs.IsInvalidArgument,
		},
		{
			desc: "host to container on a slave mount", hostMount: "master:3",
			m:        &runtimeapi.Mount{Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
			wantOpts: []string{"rbind", "rslave", "rw"}, wantRootfs: "rslave",
		},
		{
			desc: "bidirectional on a shared mount", hostMount: "shared:1",
			m:        &runtimeapi.Mount{Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL},
			wantOpts: []string{"rbind", "rshared", "rw"}, wantRootfs: "rshared",
		},
		{
			desc: "bidirectional on a slave mount", hostMount: "master:3",
			m:       &runtimeapi.Mount{Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL},
			wantErr: errdefs.IsFailedPrecondition,
		},
		{
			desc: "host to container on a private mount", hostMount: "",
			m:       &runtimeapi.Mount{Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
			wantErr: errdefs.IsFailedPrecondition,
		},
		{desc: "unknown propagation", m: &runtimeapi.Mount{Propagation: 7}, wantErr: errdefs.IsInvalidArgument},
		{desc: "mount options", m: &runtimeapi.Mount{MountOptions: []string{"noexec", "nosuid"}}, wantOpts: []string{"rbind", "rprivate", "rw", "noexec", "nosuid"}},
		{desc: "unknown mount option", m: &runtimeapi.Mount{MountOptions: []string{"exec"}}, wantErr: errdefs.IsInvalidArgument},
		{desc: "missing host directory is created", m: &runtimeapi.Mount{HostPath: "missing/dir"}, wantOpts: []string{"rbind", "rprivate", "rw"}, wantCreated: true},
		{desc: "relative container path", m: &runtimeapi.Mount{ContainerPath: "data"}, wantErr: errdefs.IsInvalidArgument},
		{desc: "image volume", m: &runtimeapi.Mount{HostPath: "-", Image: &runtimeapi.ImageSpec{Image: "busybox"}}, wantErr: errdefs.IsNotImplemented},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			fakeMounts(t, tc.hostMount)
			dir := t.TempDir()
			m := tc.m
			switch m.HostPath {
			case "":
				m.HostPath = dir
			case "-":
				m.HostPath = ""
			default:
				m.HostPath = filepath.Join(dir, m.HostPath)
			}
			if m.ContainerPath == "" {
				m.ContainerPath = "/data"
			}
			s, err := buildErr(t, func(in *Input) { in.Config.Mounts = []*runtimeapi.Mount{m} })
			if !checkErr(t, err, tc.wantErr) {
				return
			}
			got := mountAt(t, s, "/data")
			if got.Type != "bind" || got.Source != m.HostPath || !slices.Equal(got.Options, tc.wantOpts) {
				t.Errorf("mount %s %s %v, want bind %s %v", got.Type, got.Source, got.Options, m.HostPath, tc.wantOpts)
			}
			if s.Linux.RootfsPropagation != tc.wantRootfs {
				t.Errorf("rootfs propagation %q, want %q", s.Linux.RootfsPropagation, tc.wantRootfs)
			}
			if fi, err := os.Stat(m.HostPath); tc.wantCreated && (err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755&^umask()) {
				t.Errorf("host path after Spec: %v, %v", fi, err)
			}
		})
	}
}

func umask() os.FileMode {
	old := unix.Umask(0)
	unix.Umask(old)
	return os.FileMode(old)
}

// hostMountOf reads the real mount table: /proc/self is under /proc, and
// the deepest mount wins over /.
func TestHostMountOf(t *testing.T) {
	m, err := hostMountOf("/proc/self")
	if err != nil || m.Mountpoint != "/proc" {
		t.Errorf("mount of /proc/self: %+v, %v; want /proc", m, err)
	}
}

func TestConfigMountSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	writeFile(t, file, "x")
	link := filepath.Join(dir, "link")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	s := build(t, func(in *Input) {
		in.Config.Mounts = []*runtimeapi.Mount{
			{ContainerPath: "/a/b/c", HostPath: dir},
			{ContainerPath: "/a", HostPath: dir},
			{ContainerPath: "/a/b", HostPath: dir},
			{ContainerPath: "/file", HostPath: link},
		}
	})
	var order []string
	for _, d := range destinations(s.Mounts) {
		if d == "/a" || d == "/a/b" || d == "/a/b/c" {
			order = append(order, d)
		}
	}
	if !slices.Equal(order, []string{"/a", "/a/b", "/a/b/c"}) {
		t.Errorf("mount order %v, want parents first", order)
	}
	if m := mountAt(t, s, "/file"); m.Source != file {
		t.Errorf("/file from %s, want the symlink resolved to %s", m.Source, file)
	}
	if fi, err := os.Stat(file); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("host file became %v, %v", fi, err)
	}
}

func TestMountsReplacingDefaults(t *testing.T) {
	dir := t.TempDir()
	s := build(t, func(in *Input) {
		in.ShmPath = ""
		in.Config.Mounts = []*runtimeapi.Mount{{ContainerPath: "/dev", HostPath: dir}, {ContainerPath: "/proc/", HostPath: dir}}
	})
	for _, m := range s.Mounts {
		if m.Type != "bind" && (m.Destination == "/dev" || m.Destination == "/proc" || filepath.Dir(m.Destination) == "/dev") {
			t.Errorf("default mount %s %s kept under a config mount", m.Type, m.Destination)
		}
	}
	p := build(t, privileged)
	if m := mountAt(t, p, "/sys"); !slices.Contains(m.Options, "rw") {
		t.Errorf("privileged /sys options %v, want rw", m.Options)
	}
	if m := mountAt(t, p, "/sys/fs/cgroup"); !slices.Contains(m.Options, "rw") {
		t.Errorf("privileged cgroup options %v, want rw", m.Options)
	}
}

func TestMaskedPaths(t *testing.T) {
	for _, tc := range []struct {
		desc                   string
		edit                   func(*Input)
		wantMasked, wantRdonly []string
	}{
		{
			desc: "none given, without a user namespace, is the defaults", edit: func(in *Input) { sc(in) },
			wantMasked: DefaultMaskedPaths, wantRdonly: append(slices.Clone(DefaultReadonlyPaths), "/sys"),
		},
		{desc: "none given in a user namespace is none (kubelet's procMount Unmasked) but /sys", edit: func(in *Input) {
			podUserns(in)
			sc(in).MaskedPaths = []string{}
		}, wantRdonly: []string{"/sys"}},
		{
			desc:       "given ones are used",
			edit:       func(in *Input) { sc(in).MaskedPaths, sc(in).ReadonlyPaths = []string{"/bin/ls"}, []string{"/tmp"} },
			wantMasked: []string{"/bin/ls"}, wantRdonly: []string{"/tmp", "/sys"},
		},
		{desc: "privileged has none", edit: func(in *Input) {
			privileged(in)
			sc(in).MaskedPaths, sc(in).ReadonlyPaths = []string{"/proc/kcore"}, []string{"/proc/sys"}
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s := build(t, tc.edit)
			if !slices.Equal(s.Linux.MaskedPaths, tc.wantMasked) || !slices.Equal(s.Linux.ReadonlyPaths, tc.wantRdonly) {
				t.Errorf("masked %v, readonly %v, want %v, %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths, tc.wantMasked, tc.wantRdonly)
			}
		})
	}
}

func TestNamespaces(t *testing.T) {
	var (
		mnt  = specs.LinuxNamespace{Type: specs.MountNamespace}
		net  = specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/run/ketch/netns/p1"}
		uts  = specs.LinuxNamespace{Type: specs.UTSNamespace, Path: "/proc/4242/ns/uts"}
		ipc  = specs.LinuxNamespace{Type: specs.IPCNamespace, Path: "/proc/4242/ns/ipc"}
		pid  = specs.LinuxNamespace{Type: specs.PIDNamespace, Path: "/proc/4242/ns/pid"}
		user = specs.LinuxNamespace{Type: specs.UserNamespace, Path: "/proc/4242/ns/user"}
	)
	for _, tc := range []struct {
		desc    string
		edit    func(*Input)
		want    []specs.LinuxNamespace
		wantErr func(error) bool
	}{
		{desc: "no options: all the pod's", edit: func(in *Input) {}, want: []specs.LinuxNamespace{mnt, net, uts, ipc, pid}},
		{desc: "pid POD in a pod without a PID namespace of its own", edit: func(in *Input) { delete(in.SandboxNS, "pid") },
			wantErr: errdefs.IsInvalidArgument},
		{desc: "pid CONTAINER in a pod without a PID namespace of its own", edit: func(in *Input) {
			delete(in.SandboxNS, "pid")
			nsOpts(in).Pid = runtimeapi.NamespaceMode_CONTAINER
		}, want: []specs.LinuxNamespace{mnt, net, uts, ipc, {Type: specs.PIDNamespace}}},
		{desc: "pid CONTAINER", edit: func(in *Input) { nsOpts(in).Pid = runtimeapi.NamespaceMode_CONTAINER },
			want: []specs.LinuxNamespace{mnt, net, uts, ipc, {Type: specs.PIDNamespace}}},
		{desc: "pid NODE", edit: func(in *Input) { nsOpts(in).Pid = runtimeapi.NamespaceMode_NODE }, want: []specs.LinuxNamespace{mnt, net, uts, ipc}},
		{desc: "pid TARGET", edit: func(in *Input) { nsOpts(in).Pid, in.TargetPID = runtimeapi.NamespaceMode_TARGET, 99 },
			want: []specs.LinuxNamespace{mnt, net, uts, ipc, {Type: specs.PIDNamespace, Path: "/proc/99/ns/pid"}}},
		{desc: "pid TARGET without its PID", edit: func(in *Input) { nsOpts(in).Pid = runtimeapi.NamespaceMode_TARGET }, wantErr: errdefs.IsInvalidArgument},
		{desc: "ipc NODE", edit: func(in *Input) { nsOpts(in).Ipc = runtimeapi.NamespaceMode_NODE }, want: []specs.LinuxNamespace{mnt, net, uts, pid}},
		{desc: "ipc TARGET", edit: func(in *Input) { nsOpts(in).Ipc = runtimeapi.NamespaceMode_TARGET }, wantErr: errdefs.IsInvalidArgument},
		{desc: "network NODE has the node's UTS too", edit: func(in *Input) { nsOpts(in).Network, in.NetNSPath = runtimeapi.NamespaceMode_NODE, "" },
			want: []specs.LinuxNamespace{mnt, ipc, pid}},
		{desc: "the pod's network NODE is enough", edit: func(in *Input) {
			in.NetNSPath = ""
			in.Pod.Linux = &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}}
		}, want: []specs.LinuxNamespace{mnt, ipc, pid}},
		{desc: "pod network without a netns path", edit: func(in *Input) { in.NetNSPath = "" }, wantErr: errdefs.IsInvalidArgument},
		{desc: "no pins of the pod's namespaces", edit: func(in *Input) { in.SandboxNS = nil }, wantErr: errdefs.IsInvalidArgument},
		{desc: "userns NODE", edit: func(in *Input) {
			nsOpts(in).UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}
		}, want: []specs.LinuxNamespace{mnt, net, uts, ipc, pid}},
		{desc: "userns POD without its pod's", edit: func(in *Input) {
			nsOpts(in).UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD}
		}, wantErr: errdefs.IsInvalidArgument},
		{desc: "the pod's user namespace, joined first", edit: podUserns, want: []specs.LinuxNamespace{user, mnt, net, uts, ipc, pid}},
		{desc: "the pod's user namespace, the container's options repeating it", edit: func(in *Input) {
			podUserns(in)
			nsOpts(in).UsernsOptions = in.Pod.Linux.SecurityContext.NamespaceOptions.UsernsOptions
		}, want: []specs.LinuxNamespace{user, mnt, net, uts, ipc, pid}},
		{desc: "the pod's user namespace on the node's network", edit: func(in *Input) {
			podUserns(in)
			in.Pod.Linux.SecurityContext.NamespaceOptions.Network, in.NetNSPath = runtimeapi.NamespaceMode_NODE, ""
		}, want: []specs.LinuxNamespace{user, mnt, ipc, pid}},
		{desc: "the node's user namespace in a pod with its own", edit: func(in *Input) {
			podUserns(in)
			nsOpts(in).UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}
		}, wantErr: errdefs.IsInvalidArgument},
		{desc: "mappings other than the pod's", edit: func(in *Input) {
			podUserns(in)
			m := []*runtimeapi.IDMapping{{HostId: 200000, Length: 65536}}
			nsOpts(in).UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}
		}, wantErr: errdefs.IsInvalidArgument},
		{desc: "the node's PID namespace in a pod with a user namespace", edit: func(in *Input) {
			podUserns(in)
			nsOpts(in).Pid = runtimeapi.NamespaceMode_NODE
		}, wantErr: errdefs.IsInvalidArgument},
		{desc: "user namespace CONTAINER", edit: func(in *Input) {
			podUserns(in)
			nsOpts(in).UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_CONTAINER}
		}, wantErr: errdefs.IsInvalidArgument},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s, err := buildErr(t, tc.edit)
			if !checkErr(t, err, tc.wantErr) {
				return
			}
			got := slices.DeleteFunc(slices.Clone(s.Linux.Namespaces), func(ns specs.LinuxNamespace) bool { return ns.Type == specs.CgroupNamespace })
			if !slices.Equal(got, tc.want) {
				t.Errorf("namespaces %v, want %v", got, tc.want)
			}
		})
	}
	t.Run("cgroup namespace on cgroup v2 unless privileged", func(t *testing.T) {
		if got := hasNamespace(build(t, nil).Linux, specs.CgroupNamespace); got != cgroups.IsCgroup2UnifiedMode() {
			t.Errorf("cgroup namespace %v on a cgroup v2 host %v", got, cgroups.IsCgroup2UnifiedMode())
		}
		if hasNamespace(build(t, privileged).Linux, specs.CgroupNamespace) {
			t.Error("privileged container has a cgroup namespace")
		}
	})
}

// podUserns gives the input's pod a user namespace of its own, mapping
// 0-65535 to 100000-165535, and leaves the container's options empty, as
// crictl configs often are.
func podUserns(in *Input) {
	m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 100000, Length: 65536}}
	in.Pod.Linux = &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}}}}
}

// The container of a pod with a user namespace joins it with its mappings,
// so that runc can check it joins the right one; it mounts sysfs where the
// namespace owns the network namespace, and binds the node's /sys
// read-only all the way down on the node's network, where the kernel
// forbids the mount.
func TestUserNamespace(t *testing.T) {
	want := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	s := build(t, podUserns)
	if !slices.Equal(s.Linux.UIDMappings, want) || !slices.Equal(s.Linux.GIDMappings, want) {
		t.Errorf("mappings %v, %v; want %v", s.Linux.UIDMappings, s.Linux.GIDMappings, want)
	}
	if m := mountAt(t, s, "/sys"); m.Type != "sysfs" {
		t.Errorf("/sys in the pod's network namespace = %+v, want sysfs", m)
	}
	if s := build(t, nil); s.Linux.UIDMappings != nil || hasNamespace(s.Linux, specs.UserNamespace) {
		t.Errorf("a pod on the node's user namespace: mappings %v, namespaces %v", s.Linux.UIDMappings, s.Linux.Namespaces)
	}
	hostNet := func(in *Input) {
		podUserns(in)
		in.Pod.Linux.SecurityContext.NamespaceOptions.Network, in.NetNSPath = runtimeapi.NamespaceMode_NODE, ""
	}
	m := mountAt(t, build(t, hostNet), "/sys")
	if m.Type != "bind" || m.Source != "/sys" || !slices.Equal(m.Options, []string{"rbind", "nosuid", "noexec", "nodev", "rro"}) {
		t.Errorf("/sys of a user namespace on the node's network = %+v", m)
	}
}

func TestSeccomp(t *testing.T) {
	dir := t.TempDir()
	profile := filepath.Join(dir, "block-chmod.json")
	writeFile(t, profile, `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_ERRNO"}]}`)
	bad := filepath.Join(dir, "bad.json")
	writeFile(t, bad, `{`)
	profileType := func(pt runtimeapi.SecurityProfile_ProfileType, ref string) func(*Input) {
		return func(in *Input) { sc(in).Seccomp = &runtimeapi.SecurityProfile{ProfileType: pt, LocalhostRef: ref} }
	}
	path := func(p string) func(*Input) {
		//lint:ignore SA1019 the deprecated field is still honoured.
		return func(in *Input) { sc(in).SeccompProfilePath = p }
	}
	const (
		none = iota
		defaultProfile
		localProfile
	)
	for _, tc := range []struct {
		desc    string
		edit    func(*Input)
		want    int
		wantErr func(error) bool
	}{
		{desc: "nothing asked is none", edit: func(in *Input) {}, want: none},
		{desc: "runtime default", edit: profileType(runtimeapi.SecurityProfile_RuntimeDefault, ""), want: defaultProfile},
		{desc: "empty profile is runtime default (critest)", edit: func(in *Input) { sc(in).Seccomp = &runtimeapi.SecurityProfile{} }, want: defaultProfile},
		{desc: "unconfined", edit: profileType(runtimeapi.SecurityProfile_Unconfined, ""), want: none},
		{desc: "localhost, absolute", edit: profileType(runtimeapi.SecurityProfile_Localhost, profile), want: localProfile},
		{desc: "localhost, relative to the root", edit: func(in *Input) {
			in.SeccompProfileRoot = dir
			profileType(runtimeapi.SecurityProfile_Localhost, "block-chmod.json")(in)
		}, want: localProfile},
		{desc: "localhost, relative without a root", edit: profileType(runtimeapi.SecurityProfile_Localhost, "block-chmod.json"), wantErr: errdefs.IsInvalidArgument},
		{desc: "localhost, missing", edit: profileType(runtimeapi.SecurityProfile_Localhost, filepath.Join(dir, "nope.json")), wantErr: errdefs.IsNotFound},
		{desc: "localhost, not JSON", edit: profileType(runtimeapi.SecurityProfile_Localhost, bad), wantErr: errdefs.IsInvalidArgument},
		{desc: "reference without localhost", edit: profileType(runtimeapi.SecurityProfile_RuntimeDefault, profile), wantErr: errdefs.IsInvalidArgument},
		{desc: "deprecated runtime/default", edit: path("runtime/default"), want: defaultProfile},
		{desc: "deprecated docker/default", edit: path("docker/default"), want: defaultProfile},
		{desc: "deprecated unconfined", edit: path("unconfined"), want: none},
		{desc: "deprecated localhost/", edit: path("localhost/" + profile), want: localProfile},
		{desc: "deprecated nonsense", edit: path("strict"), wantErr: errdefs.IsInvalidArgument},
		{desc: "privileged has none", edit: func(in *Input) {
			privileged(in)
			profileType(runtimeapi.SecurityProfile_RuntimeDefault, "")(in)
		}, want: none},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s, err := buildErr(t, tc.edit)
			if !checkErr(t, err, tc.wantErr) {
				return
			}
			got := s.Linux.Seccomp
			switch {
			case tc.want == none && got != nil:
				t.Errorf("seccomp %v, want none", got.DefaultAction)
			case tc.want == defaultProfile && (got == nil || got.DefaultAction != specs.ActErrno || len(got.Syscalls) == 0):
				t.Errorf("seccomp %v, want the default profile", got)
			case tc.want == localProfile && (got == nil || got.DefaultAction != specs.ActAllow || len(got.Syscalls) != 1):
				t.Errorf("seccomp %v, want the file's profile", got)
			}
		})
	}
}

func TestApparmor(t *testing.T) {
	if apparmor.IsEnabled() {
		t.Skip("AppArmor is enabled here; the test covers nodes without it")
	}
	s := build(t, func(in *Input) {
		sc(in).Apparmor = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
	})
	if s.Process.ApparmorProfile != "" {
		t.Errorf("apparmor profile %q, want none", s.Process.ApparmorProfile)
	}
	_, err := buildErr(t, func(in *Input) {
		sc(in).Apparmor = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "my-profile"}
	})
	checkErr(t, err, errdefs.IsFailedPrecondition)
}

func TestResources(t *testing.T) {
	denyAll := specs.LinuxDeviceCgroup{Allow: false, Access: "rwm"}
	t.Run("none", func(t *testing.T) {
		r := build(t, nil).Linux.Resources
		if r == nil || len(r.Devices) != 1 || r.Devices[0] != denyAll || r.CPU != nil || r.Memory != nil {
			t.Errorf("resources %+v, want only the deny-all device rule", r)
		}
	})
	t.Run("all", func(t *testing.T) {
		s := build(t, func(in *Input) {
			*resourcesOf(in) = runtimeapi.LinuxContainerResources{
				CpuShares: 512, CpuQuota: 50000, CpuPeriod: 100000, CpusetCpus: "0-1", CpusetMems: "0",
				MemoryLimitInBytes: 1 << 28,
				HugepageLimits:     []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 1 << 21}},
				Unified:            map[string]string{"memory.high": "1000000"},
			}
		})
		r := s.Linux.Resources
		c := r.CPU
		if c == nil || *c.Shares != 512 || *c.Quota != 50000 || *c.Period != 100000 || c.Cpus != "0-1" || c.Mems != "0" {
			t.Errorf("cpu %+v", c)
		}
		if r.Memory == nil || *r.Memory.Limit != 1<<28 {
			t.Fatalf("memory %+v, want a limit of %d", r.Memory, 1<<28)
		}
		// Swap follows the limit only where the node can limit swap.
		if swapAvailable() != (r.Memory.Swap != nil && *r.Memory.Swap == 1<<28) {
			t.Errorf("swap %v with the swap controller %v", r.Memory.Swap, swapAvailable())
		}
		if hugetlbAvailable() != (len(r.HugepageLimits) == 1) {
			t.Errorf("hugepage limits %v with the hugetlb controller %v", r.HugepageLimits, hugetlbAvailable())
		}
		if r.Unified["memory.high"] != "1000000" || r.Devices[0] != denyAll {
			t.Errorf("unified %v, devices %v", r.Unified, r.Devices)
		}
	})
	t.Run("explicit swap", func(t *testing.T) {
		r := build(t, func(in *Input) {
			resourcesOf(in).MemoryLimitInBytes, resourcesOf(in).MemorySwapLimitInBytes = 1<<28, 1<<29
		}).Linux.Resources
		if swapAvailable() && (r.Memory.Swap == nil || *r.Memory.Swap != 1<<29) {
			t.Errorf("swap %v, want %d", r.Memory.Swap, 1<<29)
		}
	})
	t.Run("negative shares", func(t *testing.T) {
		_, err := buildErr(t, func(in *Input) { resourcesOf(in).CpuShares = -1 })
		checkErr(t, err, errdefs.IsInvalidArgument)
	})
}

func TestDevices(t *testing.T) {
	regular := filepath.Join(t.TempDir(), "regular")
	writeFile(t, regular, "")
	for _, tc := range []struct {
		desc    string
		dev     *runtimeapi.Device
		want    specs.LinuxDevice
		wantErr func(error) bool
	}{
		{desc: "renamed", dev: &runtimeapi.Device{HostPath: "/dev/null", ContainerPath: "/dev/mynull", Permissions: "rw"},
			want: specs.LinuxDevice{Path: "/dev/mynull", Type: "c", Major: 1, Minor: 3}},
		{desc: "at its host path", dev: &runtimeapi.Device{HostPath: "/dev/zero", Permissions: "rwm"},
			want: specs.LinuxDevice{Path: "/dev/zero", Type: "c", Major: 1, Minor: 5}},
		{desc: "bad permissions", dev: &runtimeapi.Device{HostPath: "/dev/null", Permissions: "rwx"}, wantErr: errdefs.IsInvalidArgument},
		{desc: "no permissions", dev: &runtimeapi.Device{HostPath: "/dev/null"}, wantErr: errdefs.IsInvalidArgument},
		{desc: "missing", dev: &runtimeapi.Device{HostPath: "/dev/ketch-no-such-device", Permissions: "r"}, wantErr: errdefs.IsNotFound},
		{desc: "not a device", dev: &runtimeapi.Device{HostPath: regular, Permissions: "r"}, wantErr: errdefs.IsInvalidArgument},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s, err := buildErr(t, func(in *Input) { in.Config.Devices = []*runtimeapi.Device{tc.dev} })
			if !checkErr(t, err, tc.wantErr) {
				return
			}
			if len(s.Linux.Devices) != 1 {
				t.Fatalf("devices %v, want one", s.Linux.Devices)
			}
			d := s.Linux.Devices[0]
			if d.Path != tc.want.Path || d.Type != tc.want.Type || d.Major != tc.want.Major || d.Minor != tc.want.Minor {
				t.Errorf("device %s %s %d:%d, want %s %s %d:%d", d.Path, d.Type, d.Major, d.Minor, tc.want.Path, tc.want.Type, tc.want.Major, tc.want.Minor)
			}
			rules := s.Linux.Resources.Devices
			if len(rules) != 2 || rules[0].Allow || !rules[1].Allow || rules[1].Type != "c" ||
				*rules[1].Major != tc.want.Major || *rules[1].Minor != tc.want.Minor || rules[1].Access != tc.dev.Permissions {
				t.Errorf("device rules %+v", rules)
			}
		})
	}
	t.Run("privileged gets the host's devices", func(t *testing.T) {
		s := build(t, privileged)
		if !slices.ContainsFunc(s.Linux.Devices, func(d specs.LinuxDevice) bool { return d.Path == "/dev/null" }) {
			t.Errorf("devices %v lack /dev/null", s.Linux.Devices)
		}
		rules := s.Linux.Resources.Devices
		if last := rules[len(rules)-1]; !last.Allow || last.Access != "rwm" || last.Type != "" || last.Major != nil {
			t.Errorf("last device rule %+v, want allow all", last)
		}
	})
}

// TestCgroupsPath: the spec's cgroupsPath for each driver, and the
// directories libcontainer makes for it, where ketchd reads its usage.
func TestCgroupsPath(t *testing.T) {
	for _, tc := range []struct {
		desc      string
		driver    CgroupDriver
		parent    string
		want, dir string
		wantErr   func(error) bool
	}{
		{desc: "cgroupfs default parent", want: "/ketch/c1", dir: "/sys/fs/cgroup/ketch/c1"},
		{desc: "cgroupfs parent", driver: "cgroupfs", parent: "kubepods/burstable/pod1", want: "/kubepods/burstable/pod1/c1",
			dir: "/sys/fs/cgroup/kubepods/burstable/pod1/c1"},
		{desc: "cgroupfs parent climbing out", driver: "cgroupfs", parent: "/a/../../b", wantErr: errdefs.IsInvalidArgument},
		{desc: "systemd default slice", driver: "systemd", want: "system.slice:ketch:c1", dir: "/sys/fs/cgroup/system.slice/ketch-c1.scope"},
		{desc: "systemd slice", driver: "systemd", parent: "kubepods-burstable-pod1.slice", want: "kubepods-burstable-pod1.slice:ketch:c1",
			dir: "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/ketch-c1.scope"},
		{desc: "systemd slice path", driver: "systemd", parent: "/kubepods.slice/kubepods-besteffort.slice", want: "kubepods-besteffort.slice:ketch:c1",
			dir: "/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice/ketch-c1.scope"},
		{desc: "systemd non-slice", driver: "systemd", parent: "/ketch", wantErr: errdefs.IsInvalidArgument},
		{desc: "unknown driver", driver: "cgroupv3", wantErr: errdefs.IsInvalidArgument},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s, err := buildErr(t, func(in *Input) { in.CgroupDriver, in.CgroupParent = tc.driver, tc.parent })
			if !checkErr(t, err, tc.wantErr) {
				return
			}
			if s.Linux.CgroupsPath != tc.want {
				t.Errorf("cgroups path %q, want %q", s.Linux.CgroupsPath, tc.want)
			}
			paths, err := CgroupPaths(s.Linux.CgroupsPath)
			switch {
			case cgroups.IsCgroup2UnifiedMode():
				if err != nil || len(paths) != 1 || paths[""] != tc.dir {
					t.Errorf("cgroup paths %v, %v; want %q", paths, err, tc.dir)
				}
			case tc.driver == "systemd":
				checkErr(t, err, errdefs.IsNotImplemented)
			default:
				// cgroup v1: the same path under each controller's
				// hierarchy, as libcontainer makes it.
				want := strings.TrimPrefix(tc.dir, "/sys/fs/cgroup")
				if err != nil || paths["memory"] != "/sys/fs/cgroup/memory"+want || paths["cpuacct"] == "" || !strings.HasSuffix(paths["cpuacct"], want) {
					t.Errorf("cgroup paths %v, %v; want each controller's hierarchy, then %q", paths, err, want)
				}
			}
		})
	}
	for _, bad := range []string{"", "ketch", "system.slice:ketch", "system.slice:ketch:", "-bad.slice:ketch:c1"} {
		if _, err := CgroupPaths(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("CgroupPaths(%q) = %v, want InvalidArgument", bad, err)
		}
	}
}

func TestAnnotations(t *testing.T) {
	a := build(t, func(in *Input) {
		in.Config.Annotations = map[string]string{
			"ketch.dev/init":                "true",
			"org.systemd.property.Delegate": "true",
			AnnotationContainerType:         "sandbox",
		}
	}).Annotations
	want := map[string]string{
		"ketch.dev/init":           "true",
		AnnotationContainerType:    ContainerTypeContainer,
		AnnotationContainerName:    "app",
		AnnotationImageName:        "docker.io/library/busybox:latest",
		AnnotationSandboxName:      "pod",
		AnnotationSandboxNamespace: "ns",
		AnnotationSandboxUID:       "uid-1",
	}
	if len(a) != len(want) {
		t.Errorf("annotations %v, want %v", a, want)
	}
	for k, v := range want {
		if a[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, a[k], v)
		}
	}
}

func TestCDIDevicesRefused(t *testing.T) {
	_, err := buildErr(t, func(in *Input) { in.Config.CDIDevices = []*runtimeapi.CDIDevice{{Name: "vendor.com/gpu=0"}} })
	checkErr(t, err, errdefs.IsNotImplemented)
}

func TestSpecIsComplete(t *testing.T) {
	s := build(t, nil)
	if s.Version != specs.Version || s.Process == nil || s.Process.Capabilities == nil || s.Root == nil || s.Linux == nil || s.Linux.Resources == nil {
		t.Fatalf("incomplete spec: %+v", s)
	}
	if _, err := Spec(Input{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("empty input: %v, want InvalidArgument", err)
	}
}

// The shim hands specs to runc's specconv and validator; every shape Spec
// makes must get through them.
func TestSpecsPassRuncValidation(t *testing.T) {
	fakeMounts(t, "shared:1")
	for _, tc := range []struct {
		desc string
		edit func(*Input)
	}{
		{desc: "default", edit: func(in *Input) {}},
		{desc: "privileged on the node's namespaces", edit: func(in *Input) {
			privileged(in)
			o := nsOpts(in)
			o.Network, o.Pid, o.Ipc, in.NetNSPath = runtimeapi.NamespaceMode_NODE, runtimeapi.NamespaceMode_NODE, runtimeapi.NamespaceMode_NODE, ""
		}},
		{desc: "mounts, devices, resources, seccomp", edit: func(in *Input) {
			dir := t.TempDir()
			in.Config.Mounts = []*runtimeapi.Mount{
				{ContainerPath: "/ro", HostPath: dir, Readonly: true, RecursiveReadOnly: true},
				{ContainerPath: "/shared", HostPath: dir, Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL},
			}
			in.Config.Devices = []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/n", Permissions: "rw"}}
			*resourcesOf(in) = runtimeapi.LinuxContainerResources{CpuShares: 2, CpuQuota: 1000, CpuPeriod: 100000, MemoryLimitInBytes: 1 << 26}
			sc(in).Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
			nsOpts(in).Pid = runtimeapi.NamespaceMode_CONTAINER
		}},
		{desc: "the pod's user namespace", edit: func(in *Input) {
			podUserns(in)
			in.SandboxNS = pinsOf(usernsProcess(t, 100000))
		}},
		{desc: "the pod's user namespace on the node's network", edit: func(in *Input) {
			podUserns(in)
			in.Pod.Linux.SecurityContext.NamespaceOptions.Network, in.NetNSPath = runtimeapi.NamespaceMode_NODE, ""
			in.SandboxNS = pinsOf(usernsProcess(t, 100000))
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s := build(t, tc.edit)
			config, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: "c1", Spec: s})
			if err != nil {
				t.Fatalf("specconv: %v", err)
			}
			// The namespace paths name a pod that does not run here.
			for i := range config.Namespaces {
				config.Namespaces[i].Path = ""
			}
			if err := validate.Validate(config); err != nil {
				t.Errorf("validate: %v", err)
			}
		})
	}
}

// runc refuses to join a user namespace whose mappings are not the
// spec's: what a reused sandbox PID would otherwise make silently wrong.
func TestRuncChecksUserNamespaceMappings(t *testing.T) {
	s := build(t, func(in *Input) {
		podUserns(in)
		in.SandboxNS = pinsOf(usernsProcess(t, 200000))
	})
	if _, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: "c1", Spec: s}); err == nil {
		t.Error("specconv took mappings other than the namespace's")
	}
}

// pinsOf names the namespaces of process pid as a pod's pins.
func pinsOf(pid int) map[string]string {
	pins := map[string]string{}
	for _, ns := range []string{"ipc", "uts", "pid", "user"} {
		pins[ns] = fmt.Sprintf("/proc/%d/ns/%s", pid, ns)
	}
	return pins
}

// usernsProcess starts a process in a user namespace that maps 0-65535 to
// hostID and up, for as long as the test runs, and returns its PID.
func usernsProcess(t *testing.T, hostID int) int {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: hostID, Size: 65536}}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER, UidMappings: m, GidMappings: m}
	if err := cmd.Start(); err != nil {
		t.Skipf("no user namespace here: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd.Process.Pid
}
