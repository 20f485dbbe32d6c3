package oci

import (
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// TestSandboxSpec: a pod's PID 1 gets the namespaces the pod does not share
// with the node, its files read-only, its cgroup named as its containers'
// are; input that cannot work is InvalidArgument, naming the field.
func TestSandboxSpec(t *testing.T) {
	ids := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	valid := func() SandboxInput {
		return SandboxInput{ID: "p1", Rootfs: "/var/lib/ketch/sandbox/rootfs", Hostname: "web-0", NetNSPath: "/run/ketch/netns/p1",
			CgroupParent: "kubepods/pod1", ShmPath: "/run/ketch/pods/p1/shm", HostsPath: "/run/ketch/pods/p1/hosts"}
	}
	for _, tc := range []struct {
		desc    string
		change  func(*SandboxInput)
		wantErr string // "" for a spec
		ns      []specs.LinuxNamespaceType
		cgroup  string
	}{
		{desc: "pod network", change: func(*SandboxInput) {},
			ns:     []specs.LinuxNamespaceType{specs.MountNamespace, specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.NetworkNamespace},
			cgroup: "/kubepods/pod1/p1"},
		{desc: "node's namespaces", change: func(in *SandboxInput) {
			in.HostPID, in.HostIPC, in.HostUTS, in.Hostname, in.NetNSPath = true, true, true, "", ""
		}, ns: []specs.LinuxNamespaceType{specs.MountNamespace}, cgroup: "/kubepods/pod1/p1"},
		{desc: "user namespace", change: func(in *SandboxInput) {
			in.UserNSPath, in.UIDMappings, in.GIDMappings, in.CgroupDriver, in.CgroupParent = "/run/ketch/pods/p1/userns", ids, ids, CgroupDriverSystemd, ""
		}, ns: []specs.LinuxNamespaceType{specs.UserNamespace, specs.MountNamespace, specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.NetworkNamespace},
			cgroup: "system.slice:ketch:p1"},
		{desc: "bad hostname", change: func(in *SandboxInput) { in.Hostname = "Bad_Host" }, wantErr: "hostname"},
		{desc: "hostname with the node's UTS", change: func(in *SandboxInput) { in.HostUTS = true }, wantErr: "UTS"},
		{desc: "mappings without a user namespace", change: func(in *SandboxInput) { in.UIDMappings = ids }, wantErr: "mappings"},
		{desc: "user namespace without mappings", change: func(in *SandboxInput) { in.UserNSPath = "/x" }, wantErr: "mappings"},
		{desc: "user namespace with the node's PIDs", change: func(in *SandboxInput) {
			in.UserNSPath, in.UIDMappings, in.GIDMappings, in.HostPID = "/x", ids, ids, true
		}, wantErr: "host's PID"},
		{desc: "no cgroup name", change: func(in *SandboxInput) { in.ID = "" }, wantErr: "cgroup name"},
		{desc: "unknown cgroup driver", change: func(in *SandboxInput) { in.CgroupDriver = "cgroupv3" }, wantErr: "driver"},
		{desc: "parent climbing out", change: func(in *SandboxInput) { in.CgroupParent = "../x" }, wantErr: "parent"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := valid()
			tc.change(&in)
			s, err := SandboxSpec(in)
			if tc.wantErr != "" {
				if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want InvalidArgument naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var ns []specs.LinuxNamespaceType
			for _, n := range s.Linux.Namespaces {
				ns = append(ns, n.Type)
			}
			if !slices.Equal(ns, tc.ns) {
				t.Errorf("namespaces %v, want %v", ns, tc.ns)
			}
			if s.Linux.CgroupsPath != tc.cgroup {
				t.Errorf("cgroups path %q, want %q", s.Linux.CgroupsPath, tc.cgroup)
			}
			if !slices.Equal(s.Process.Args, []string{SandboxInit}) || !s.Root.Readonly || s.Process.Capabilities == nil ||
				len(s.Process.Capabilities.Bounding) > 0 || !s.Process.NoNewPrivileges {
				t.Errorf("process %+v, root %+v: want ketch-init with no capabilities from a read-only root", s.Process, s.Root)
			}
			for _, m := range s.Mounts {
				if m.Destination == "/etc/hosts" && !slices.Contains(m.Options, "ro") {
					t.Errorf("/etc/hosts mounted %v, want read-only", m.Options)
				}
				if m.Destination == "/sys" {
					t.Error("/sys mounted: its first mount in the netns would fix every container's /sys read-only or not")
				}
			}
		})
	}
}
