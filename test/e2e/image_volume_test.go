//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestImageVolume: a data-only image (five layers) mounted as a volume, whole
// and by a sub path, read-only, nosuid and nodev; it outlives the removal of
// its image while the container runs, is reported in the status, and goes
// with the container. A sub path out of the image or not in it, and an
// image not pulled, are refused without leaving anything.
func TestImageVolume(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	d.mustPull(t, busybox)
	models := d.mustPull(t, multilayer)
	pod, podCfg, _ := d.podWithLogs(t, "imagevol")

	cfg := containerConfig("app", "sleep", "300")
	cfg.Mounts = []*runtimeapi.Mount{
		{ContainerPath: "/models", Image: &runtimeapi.ImageSpec{Image: models}},
		{ContainerPath: "/data", Image: &runtimeapi.ImageSpec{Image: multilayer}, ImageSubPath: "data"},
	}
	id := d.createContainer(t, pod, podCfg, cfg)
	d.startContainer(t, id)

	run := func(cmd string) (string, int32) {
		t.Helper()
		resp, err := d.rt.ExecSync(ctxT(t, 30*time.Second), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", cmd}, Timeout: 20})
		if err != nil {
			t.Fatalf("exec %q: %v", cmd, err)
		}
		return string(resp.Stdout) + string(resp.Stderr), resp.ExitCode
	}
	if out, code := run("ls /models/data /data"); code != 0 || strings.Count(out, "layer-5.bin") != 2 || !strings.Contains(out, "layer-1.bin") {
		t.Errorf("the image's five layers are not all in /models/data and /data: %d %q", code, out)
	}
	if out, code := run("touch /models/x"); code == 0 {
		t.Errorf("an image volume is writable: %q", out)
	}
	out, _ := run("grep -E ' /(models|data) ' /proc/self/mountinfo")
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		opts := strings.Split(strings.Fields(line + " x x x x x x")[5], ",")
		for _, want := range []string{"ro", "nosuid", "nodev"} {
			if !slices.Contains(opts, want) {
				t.Errorf("image volume mount %q lacks %s", line, want)
			}
		}
	}
	if n := len(strings.Split(strings.TrimSpace(out), "\n")); n != 2 {
		t.Errorf("%d image volume mounts in the container, want 2: %q", n, out)
	}
	st := d.ctrStatus(t, id)
	var reported int
	for _, m := range st.Mounts {
		if m.GetImage().GetImage() != "" {
			reported++
		}
	}
	if reported != 2 {
		t.Errorf("ContainerStatus reports %d image mounts, want 2: %v", reported, st.Mounts)
	}

	// kubelet's image GC may remove an image a volume uses: the volume stays.
	if _, err := d.img.RemoveImage(ctxT(t, 30*time.Second), &runtimeapi.RemoveImageRequest{Image: spec(models)}); err != nil {
		t.Fatal(err)
	}
	if out, code := run("md5sum /models/data/layer-3.bin"); code != 0 {
		t.Errorf("the volume went with its image: %q", out)
	}
	if _, err := d.rt.StopContainer(ctxT(t, 30*time.Second), &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.rt.RemoveContainer(ctxT(t, 30*time.Second), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	d.checkContainerGone(t, id)
	if ents, _ := os.ReadDir(filepath.Join(d.state, "containers")); len(ents) != 0 {
		t.Errorf("container directories left: %v", ents)
	}

	d.mustPull(t, multilayer)
	for _, tc := range []struct {
		desc  string
		mount *runtimeapi.Mount
		want  codes.Code
	}{
		{"sub path out of the image", &runtimeapi.Mount{ContainerPath: "/m", Image: spec(multilayer), ImageSubPath: "../../../etc"}, codes.InvalidArgument},
		{"sub path not in the image", &runtimeapi.Mount{ContainerPath: "/m", Image: spec(multilayer), ImageSubPath: "no/such"}, codes.NotFound},
		{"image not pulled", &runtimeapi.Mount{ContainerPath: "/m", Image: spec(registry + "/no/such:image")}, codes.NotFound},
	} {
		cfg := containerConfig("bad", "true")
		cfg.Mounts = []*runtimeapi.Mount{tc.mount}
		_, err := d.rt.CreateContainer(ctxT(t, 30*time.Second), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
		if status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %s", tc.desc, err, tc.want)
		}
	}
	d.checkNoContainerLeft(t)
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), d.state+"/containers/") {
		t.Error("a refused image volume left a mount")
	}
	d.removePod(t, pod)
	d.checkPodGone(t, pod)
}
