//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestRuntimeInfo: Version, Status and RuntimeConfig tell the truth.
func TestRuntimeInfo(t *testing.T) {
	d := startKetchd(t, daemonOpts{})
	ctx := ctxT(t, 10*time.Second)
	v, err := d.rt.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil || v.RuntimeName != "ketch" || v.RuntimeApiVersion != "v1" || v.RuntimeVersion == "" {
		t.Fatalf("Version = %+v, %v", v, err)
	}
	networkReady := func() *runtimeapi.RuntimeCondition {
		st, err := d.rt.Status(ctx, &runtimeapi.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range st.Status.Conditions {
			if c.Type == runtimeapi.RuntimeReady && !c.Status {
				t.Errorf("RuntimeReady false: %+v", c)
			}
			if c.Type == runtimeapi.NetworkReady {
				return c
			}
		}
		t.Fatal("no NetworkReady condition")
		return nil
	}
	if c := networkReady(); c.Status || c.Reason == "" || c.Message == "" {
		t.Errorf("NetworkReady with no CNI config = %+v, want false with a reason", c)
	}
	netd := filepath.Join(d.dir, "net.d")
	if err := os.MkdirAll(netd, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := `{"cniVersion":"1.0.0","name":"test","plugins":[{"type":"loopback"}]}`
	if err := os.WriteFile(filepath.Join(netd, "10-test.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if c := networkReady(); !c.Status {
		t.Errorf("NetworkReady with a CNI config = %+v, want true", c)
	}
	rc, err := d.rt.RuntimeConfig(ctx, &runtimeapi.RuntimeConfigRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := runtimeapi.CgroupDriver_CGROUPFS
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		want = runtimeapi.CgroupDriver_SYSTEMD
	}
	if got := rc.GetLinux().GetCgroupDriver(); got != want {
		t.Errorf("cgroup driver = %v, want %v", got, want)
	}
	// No CRIU on the node: checkpoints are not offered.
	_, err = d.rt.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("CheckpointContainer = %v, want Unimplemented", err)
	}
}

// TestSocket: mode 0660, and a second ketchd does not steal a live socket.
func TestSocket(t *testing.T) {
	d := startKetchd(t, daemonOpts{})
	fi, err := os.Stat(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket mode = %v, want a 0660 socket", fi.Mode())
	}
	second := &daemon{dir: d.dir, cfgPath: d.cfgPath, root: d.root, socket: d.socket}
	out, err := execOutput(ketchdBin, "--config", second.cfgPath)
	if err == nil || !strings.Contains(out, "another") {
		t.Errorf("second ketchd on a live socket: err %v, output %s", err, out)
	}
	if _, err := d.rt.Version(ctxT(t, 5*time.Second), &runtimeapi.VersionRequest{}); err != nil {
		t.Errorf("first ketchd stopped serving: %v", err)
	}
}
