//go:build e2e

package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// scrape reads ketchd's /metrics as a map of series ("name{labels}") to
// values.
func (d *daemon) scrape(t testing.TB) map[string]float64 {
	t.Helper()
	m := regexp.MustCompile(`msg="metrics serving" address=(\S+)`).FindStringSubmatch(d.log.String())
	if m == nil {
		t.Fatal("ketchd logged no metrics address")
	}
	resp, err := http.Get("http://" + m[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s %v", resp.Status, err)
	}
	out := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		if i := strings.LastIndexByte(l, ' '); i > 0 && !strings.HasPrefix(l, "#") {
			v, _ := strconv.ParseFloat(l[i+1:], 64)
			out[l[:i]] = v
		}
	}
	return out
}

// TestMetrics: what an operator scrapes moves with what the node does: a
// pull, a pod started and removed, its network, an OOM kill, a session, an
// orphan reaped and a signal forwarded by ketch-init, a shim killed -9.
func TestMetrics(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	before := d.scrape(t)
	if _, ok := before["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}
	if _, ok := before["process_resident_memory_bytes"]; !ok {
		t.Error("no process metrics")
	}
	d.mustPull(t, busybox)
	pod, podCfg, logs := d.sharedPIDPod(t, "metrics")

	cfg := containerConfig("oom", "tail", "/dev/zero")
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 16 << 20}
	oom := d.createContainer(t, pod, podCfg, cfg)
	d.startContainer(t, oom)
	d.waitExited(t, oom, 30*time.Second)
	// As in a pod with shareProcessNamespace: the pod's ketch-init is the
	// PID 1 the container's orphans go to.
	scfg := containerConfig("sleeper", "sleep", "3600")
	scfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	sleeper := d.createContainer(t, pod, podCfg, scfg)
	d.startContainer(t, sleeper)
	// The exec's shell leaves a child behind: an orphan in the pod's PID
	// namespace, whose PID 1, ketch-init, reaps it.
	if _, err := d.rt.ExecSync(ctxT(t, 10*time.Second), &runtimeapi.ExecSyncRequest{ContainerId: sleeper, Cmd: []string{"sh", "-c", "sleep 0.2 & exit 0"}, Timeout: 5}); err != nil {
		t.Fatal(err)
	}
	// A container in init mode whose ketch-init passes TERM on.
	icfg := containerConfig("init", "sh", "-c", `trap "exit 0" TERM; echo trapped; while true; do sleep 0.1; done`)
	icfg.Annotations = map[string]string{"ketch.dev/init": "true"}
	withInit := d.createContainer(t, pod, podCfg, icfg)
	d.startContainer(t, withInit)
	// A TERM before the shell has set its trap would kill it (143).
	waitLog(t, filepath.Join(logs, "init.log"), "trapped")
	if _, err := d.rt.StopContainer(ctxT(t, 30*time.Second), &runtimeapi.StopContainerRequest{ContainerId: withInit, Timeout: 10}); err != nil {
		t.Fatal(err)
	}
	if s := d.ctrStatus(t, withInit); s.ExitCode != 0 {
		t.Errorf("the container in init mode exited %d, want 0 from its TERM trap", s.ExitCode)
	}
	waitFor(t, 5*time.Second, "the orphan reaped", func() bool {
		return d.scrape(t)["ketch_init_zombies_reaped_total"] > before["ketch_init_zombies_reaped_total"]
	})

	mid := d.scrape(t)
	for series, want := range map[string]float64{
		`ketch_image_pulls_total{result="OK"}`:                             1,
		`ketch_cri_requests_total{code="OK",method="RunPodSandbox"}`:       1,
		`ketch_cri_requests_total{code="OK",method="StartContainer"}`:      3,
		`ketch_init_signals_forwarded_total`:                               1,
		`ketch_cri_request_duration_seconds_count{method="RunPodSandbox"}`: 1,
		`ketch_pods{state="ready"}`:                                        1,
		`ketch_containers{state="running"}`:                                1,
		`ketch_containers{state="exited"}`:                                 2,
		`ketch_container_exits_total{reason="OOMKilled"}`:                  1,
		`ketch_shim_launches_total`:                                        1,
		`ketch_cni_duration_seconds_count{op="add"}`:                       1,
		`ketch_image_pulls_in_progress`:                                    0,
		`ketch_stream_sessions_open{kind="exec"}`:                          0,
	} {
		if got := mid[series] - before[series]; got != want {
			t.Errorf("%s moved by %v, want %v", series, got, want)
		}
	}
	if mid["ketch_image_pull_bytes_total"] <= before["ketch_image_pull_bytes_total"] {
		t.Error("a pull added no bytes")
	}

	// A shim killed -9 takes its pod's running container with it.
	if err := syscall.Kill(d.shimPID(pod), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the container's exit with its shim", func() bool {
		return d.scrape(t)[`ketch_container_exits_total{reason="ShimDied"}`]-before[`ketch_container_exits_total{reason="ShimDied"}`] == 1
	})
	if got := d.scrape(t)["ketch_shim_deaths_total"] - before["ketch_shim_deaths_total"]; got != 1 {
		t.Errorf("ketch_shim_deaths_total moved by %v, want 1", got)
	}
	reaped := d.scrape(t)["ketch_init_zombies_reaped_total"]
	d.stopPod(t, pod)
	d.removePod(t, pod)
	after := d.scrape(t)
	// The pod's files are gone; what its ketch-inits counted is not.
	if after["ketch_init_zombies_reaped_total"] < reaped || after["ketch_init_signals_forwarded_total"] < mid["ketch_init_signals_forwarded_total"] {
		t.Errorf("ketch-init counts fell with the pod's removal: reaped %v then %v, forwarded %v then %v", reaped, after["ketch_init_zombies_reaped_total"],
			mid["ketch_init_signals_forwarded_total"], after["ketch_init_signals_forwarded_total"])
	}
	if n := after[`ketch_pods{state="ready"}`] + after[`ketch_pods{state="notready"}`]; n != 0 {
		t.Errorf("%v pods counted after the only one was removed", n)
	}
	if after[`ketch_cni_duration_seconds_count{op="del"}`] <= before[`ketch_cni_duration_seconds_count{op="del"}`] {
		t.Error("no CNI DEL counted for the removed pod")
	}
}

// TestJSONLog: with log_format = "json" every line ketchd writes is one
// JSON object, and the lines about a pod carry its ID, name and namespace.
func TestJSONLog(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true, logFormat: "json"})
	pod := d.runPod(t, podConfig(t, "json-log"))
	d.stopPod(t, pod)
	d.removePod(t, pod)
	about := 0
	for _, l := range strings.Split(strings.TrimSpace(d.log.String()), "\n") {
		var line map[string]any
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatalf("a line that is not JSON: %q", l)
		}
		if line["pod"] == pod {
			about++
			if line["pod_name"] != "json-log" || line["pod_namespace"] == nil {
				t.Errorf("a line about pod %s does not name it: %s", pod, l)
			}
		}
	}
	if about == 0 {
		t.Errorf("no line names pod %s:\n%s", pod, d.log.String())
	}
}
