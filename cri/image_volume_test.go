package cri

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"go.uber.org/mock/gomock"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/image"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/sandbox"
)

// An image volume is the image's file system, mounted read-only, nosuid and
// nodev at the container path (image_sub_path a directory of it); a bad
// sub path is refused before anything is mounted; a failure releases what
// was made.
func TestImageVolumes(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		sub     string
		viewErr error
		want    codes.Code
		source  string // the bind mount's source, under the volume's mount
	}{
		{"whole image", "", nil, codes.OK, ""},
		{"a directory of it", "data/models", nil, codes.OK, "data/models"},
		{"a sub path out of it", "../../etc", nil, codes.InvalidArgument, ""},
		{"a sub path not in it", "no/such", nil, codes.NotFound, ""},
		{"an image not pulled", "", errdefs.ErrNotFound, codes.NotFound, ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			d := newTestDeps(t, Config{})
			blockWait(d.sandboxes)
			podCfg := testPodConfig("p")
			pod := runTestPod(t, d, podCfg)
			dir := t.TempDir()
			pod1 := filepath.Join(dir, "pod")
			for _, f := range []string{"hosts", "resolv.conf", "hostname"} {
				if err := os.MkdirAll(pod1, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(pod1, f), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			d.containers.EXPECT().Paths(gomock.Any()).Return(sandbox.PodPaths{NetNS: "/run/ketch/netns/x", Hosts: filepath.Join(pod1, "hosts"),
				ResolvConf: filepath.Join(pod1, "resolv.conf"), Hostname: filepath.Join(pod1, "hostname"),
				Namespaces: map[string]string{"ipc": filepath.Join(pod1, "ipcns"), "uts": filepath.Join(pod1, "utsns"), "pid": filepath.Join(pod1, "pidns")}}).AnyTimes()
			d.containers.EXPECT().ContainerRootfs(gomock.Any()).DoAndReturn(func(id string) string {
				return filepath.Join(dir, id, "rootfs")
			}).AnyTimes()
			d.containers.EXPECT().MakeContainerDir(gomock.Any(), -1).Return(nil)
			d.images.EXPECT().Get(gomock.Any(), "busybox").Return(image.Image{ID: "sha256:app"}, nil)
			d.images.EXPECT().Prepare(gomock.Any(), gomock.Any(), "sha256:app", gomock.Any()).DoAndReturn(
				func(_ context.Context, _, _, target string, _ ...image.PrepareOpt) (image.Image, error) {
					return image.Image{}, os.MkdirAll(target, 0o700)
				})
			var volume string
			if tc.want != codes.InvalidArgument {
				d.images.EXPECT().View(gomock.Any(), gomock.Any(), "sha256:models", gomock.Any()).DoAndReturn(
					func(_ context.Context, key, _, target string) (image.Image, error) {
						if filepath.Base(key) != "volume-1" || filepath.Base(target) != "1" {
							t.Errorf("volume of mount 1 keyed %s at %s", key, target)
						}
						volume = target
						if tc.viewErr != nil {
							return image.Image{}, tc.viewErr
						}
						return image.Image{}, os.MkdirAll(filepath.Join(target, "data/models"), 0o755)
					})
			}
			var spec *specs.Spec
			if tc.want == codes.OK {
				d.shimOf(pod).EXPECT().CreateContainer(gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any()).DoAndReturn(
					func(_ context.Context, _ string, s *specs.Spec, _ shim.ContainerOptions) error {
						spec = s
						return nil
					})
			} else {
				// Undone: the volumes (found by their directory), the rootfs,
				// the container's directory.
				d.images.EXPECT().Release(gomock.Any(), gomock.Any(), gomock.Any()).DoAndReturn(
					func(_ context.Context, _, target string) error { return os.RemoveAll(target) }).MinTimes(1)
				d.containers.EXPECT().RemoveContainerDir(gomock.Any()).Return(nil)
			}
			cfg := &runtimeapi.ContainerConfig{
				Metadata: &runtimeapi.ContainerMetadata{Name: "c"},
				Image:    &runtimeapi.ImageSpec{Image: "busybox"},
				Command:  []string{"sh"},
				Mounts: []*runtimeapi.Mount{
					{ContainerPath: "/data", HostPath: dir},
					{ContainerPath: "/models", Image: &runtimeapi.ImageSpec{Image: "sha256:models"}, ImageSubPath: tc.sub},
				},
			}
			_, err := intercept(t, d.srv.CreateContainer, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
			if status.Code(err) != tc.want {
				t.Fatalf("CreateContainer: %v, want %s", err, tc.want)
			}
			if tc.want != codes.OK {
				if ctrs, _ := d.store.ListContainers(store.ContainerFilter{}); len(ctrs) != 0 {
					t.Errorf("a failed create left records: %v", ctrs)
				}
				return
			}
			i := slices.IndexFunc(spec.Mounts, func(m specs.Mount) bool { return m.Destination == "/models" })
			if i < 0 {
				t.Fatalf("no mount at /models in %v", spec.Mounts)
			}
			m := spec.Mounts[i]
			if want := filepath.Join(volume, tc.source); m.Source != want {
				t.Errorf("/models is bound from %s, want %s", m.Source, want)
			}
			for _, o := range []string{"ro", "nosuid", "nodev"} {
				if !slices.Contains(m.Options, o) {
					t.Errorf("/models options %v lack %s", m.Options, o)
				}
			}
			if slices.Contains(m.Options, "rw") {
				t.Errorf("/models options %v", m.Options)
			}
		})
	}
}
