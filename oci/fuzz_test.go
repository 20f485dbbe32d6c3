package oci

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// FuzzSpec: a container config as it comes off the wire, whatever its
// bytes, gives a runtime spec or an error of the kinds Spec documents,
// never a panic; an accepted one runs a command, in the rootfs, with every
// mount at an absolute, clean path.
func FuzzSpec(f *testing.F) {
	seeds := []*runtimeapi.ContainerConfig{
		{ // kubelet: a deployment's container with a volume, probes' env and limits
			Metadata: &runtimeapi.ContainerMetadata{Name: "web", Attempt: 1},
			Image:    &runtimeapi.ImageSpec{Image: "docker.io/library/nginx:1.27"},
			Command:  []string{"nginx"}, Args: []string{"-g", "daemon off;"}, WorkingDir: "/srv",
			Envs:    []*runtimeapi.KeyValue{{Key: "KUBERNETES_SERVICE_HOST", Value: []byte("10.96.0.1")}},
			Mounts:  []*runtimeapi.Mount{{ContainerPath: "/var/run/secrets/kubernetes.io/serviceaccount", HostPath: "/", Readonly: true}},
			LogPath: "web/1.log",
			Linux: &runtimeapi.LinuxContainerConfig{
				Resources: &runtimeapi.LinuxContainerResources{CpuShares: 102, CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 128 << 20},
				SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
					RunAsUser:        &runtimeapi.Int64Value{Value: 1000},
					NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
					Capabilities:     &runtimeapi.Capability{DropCapabilities: []string{"ALL"}, AddCapabilities: []string{"NET_BIND_SERVICE"}},
					Seccomp:          &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
					MaskedPaths:      []string{"/proc/kcore"}, ReadonlyPaths: []string{"/proc/sys"},
				},
			},
		},
		{ // critest: a user by name, sysctls, devices
			Metadata: &runtimeapi.ContainerMetadata{Name: "c"},
			Image:    &runtimeapi.ImageSpec{Image: "busybox"},
			Devices:  []*runtimeapi.Device{{ContainerPath: "/dev/mynull", HostPath: "/dev/null", Permissions: "rwm"}},
			Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				RunAsUsername: "www-data", SupplementalGroups: []int64{44}, ReadonlyRootfs: true,
			}},
		},
		{ // a request that tries to get out
			Metadata:   &runtimeapi.ContainerMetadata{Name: "../x"},
			Image:      &runtimeapi.ImageSpec{Image: "busybox"},
			WorkingDir: "../../etc",
			Mounts:     []*runtimeapi.Mount{{ContainerPath: "../../proc", HostPath: "/"}, {ContainerPath: "/a", HostPath: "relative"}},
			Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				Privileged: true, RunAsUsername: "../../etc/shadow",
				Capabilities: &runtimeapi.Capability{AddCapabilities: []string{"CAP_NOPE"}},
				Apparmor:     &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "x"},
			}},
		},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var cfg runtimeapi.ContainerConfig
		if err := proto.Unmarshal(b, &cfg); err != nil {
			return // refused by the gRPC server before any handler runs
		}
		in := testInput(t)
		// Spec makes a mount's missing host directory: keep them all in
		// the test's own directory.
		for _, m := range cfg.GetMounts() {
			m.HostPath = filepath.Join(in.Rootfs, "..", "volumes", filepath.Base(filepath.Clean("/"+m.GetHostPath())))
		}
		in.Config = &cfg
		s, err := Spec(in)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) && !errdefs.IsNotFound(err) && !errdefs.IsFailedPrecondition(err) && !errdefs.IsNotImplemented(err) {
				t.Fatalf("Spec: %v, want InvalidArgument, NotFound, FailedPrecondition or NotImplemented", err)
			}
			return
		}
		if len(s.Process.Args) == 0 || s.Root.Path != in.Rootfs {
			t.Fatalf("accepted spec runs %q in %q", s.Process.Args, s.Root.Path)
		}
		for _, m := range s.Mounts {
			if !filepath.IsAbs(m.Destination) || filepath.Clean(m.Destination) != m.Destination || strings.Contains(m.Destination, "\x00") {
				t.Fatalf("mount at %q", m.Destination)
			}
		}
	})
}
