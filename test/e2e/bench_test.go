//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	_ "crypto/sha256" // go-digest needs the algorithm registered
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// BenchmarkPullImage pulls a five-layer image (5 × 2 MiB) and a
// twenty-layer one (20 × 1 MiB) from the local registry: cold (nothing in
// the store; the image is removed between runs) and warm (already pulled:
// resolve and verify only).
func BenchmarkPullImage(b *testing.B) {
	d := startKetchd(b, daemonOpts{})
	for _, c := range []struct{ name, ref string }{{"cold", multilayer}, {"cold-20-layers", multilayer20}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				id := d.mustPull(b, c.ref)
				b.StopTimer()
				d.remove(b, id)
				b.StartTimer()
			}
		})
	}
	b.Run("warm", func(b *testing.B) {
		d.mustPull(b, multilayer)
		for b.Loop() {
			d.mustPull(b, multilayer)
		}
	})
}

// BenchmarkImageQueries: ImageStatus and ListImages with 200 images stored.
func BenchmarkImageQueries(b *testing.B) {
	const n = 200
	refs := pushManyImages(b, n)
	d := startKetchd(b, daemonOpts{})
	for _, ref := range refs {
		d.mustPull(b, ref)
	}
	if got := len(d.list(b)); got != n {
		b.Fatalf("%d images stored, want %d", got, n)
	}
	b.Run("ImageStatus", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if d.status(b, refs[i%n]) == nil {
				b.Fatal("image missing")
			}
			i++
		}
	})
	b.Run("ListImages", func(b *testing.B) {
		for b.Loop() {
			d.list(b)
		}
	})
}

// pushManyImages pushes n distinct small images (one shared layer, a config
// label each) to the test registry as ketch-test/many:<i>, through the
// registry's HTTP API.
func pushManyImages(tb testing.TB, n int) []string {
	tb.Helper()
	const repo = "ketch-test/many"
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	content := []byte("ketch benchmark layer\n")
	_ = tw.WriteHeader(&tar.Header{Name: "bench.txt", Mode: 0o644, Size: int64(len(content)), ModTime: time.Unix(0, 0)})
	_, _ = tw.Write(content)
	_ = tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(raw.Bytes())
	_ = zw.Close()
	layer := pushBlob(tb, repo, gz.Bytes(), ocispec.MediaTypeImageLayerGzip)
	diffID := digest.FromBytes(raw.Bytes())

	refs := make([]string, n)
	for i := range refs {
		cfg, _ := json.Marshal(ocispec.Image{
			Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
			Config:   ocispec.ImageConfig{Labels: map[string]string{"ketch.dev/bench": fmt.Sprint(i)}},
			RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
		})
		m := ocispec.Manifest{
			MediaType: ocispec.MediaTypeImageManifest,
			Config:    pushBlob(tb, repo, cfg, ocispec.MediaTypeImageConfig),
			Layers:    []ocispec.Descriptor{layer},
		}
		m.SchemaVersion = 2
		body, _ := json.Marshal(m)
		tag := fmt.Sprint(i)
		req, _ := http.NewRequest(http.MethodPut, "http://"+registry+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(body))
		req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
		mustDo(tb, req, http.StatusCreated)
		refs[i] = registry + "/" + repo + ":" + tag
	}
	return refs
}

func pushBlob(tb testing.TB, repo string, blob []byte, mediaType string) ocispec.Descriptor {
	tb.Helper()
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	req, _ := http.NewRequest(http.MethodPost, "http://"+registry+"/v2/"+repo+"/blobs/uploads/", nil)
	resp := mustDo(tb, req, http.StatusAccepted)
	loc, err := resp.Location()
	if err != nil {
		tb.Fatal(err)
	}
	q := loc.Query()
	q.Set("digest", desc.Digest.String())
	loc.RawQuery = q.Encode()
	req, _ = http.NewRequest(http.MethodPut, loc.String(), bytes.NewReader(blob))
	req.Header.Set("Content-Type", "application/octet-stream")
	mustDo(tb, req, http.StatusCreated)
	return desc
}

func mustDo(tb testing.TB, req *http.Request, want int) *http.Response {
	tb.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		tb.Fatalf("%s %s: %s: %s", req.Method, req.URL, resp.Status, body)
	}
	return resp
}

// BenchmarkPodSandbox runs b.N pods one after another (`make bench` runs
// 50) through RunPodSandbox, StopPodSandbox and RemovePodSandbox, and
// reports each call's p50 and p90.
func BenchmarkPodSandbox(b *testing.B) {
	d := startKetchd(b, daemonOpts{network: true})
	var run, stop, remove []time.Duration
	i := 0
	for b.Loop() {
		start := time.Now()
		id := d.runPod(b, podConfig(b, fmt.Sprintf("bench-%d", i)))
		run = append(run, time.Since(start))
		start = time.Now()
		d.stopPod(b, id)
		stop = append(stop, time.Since(start))
		start = time.Now()
		d.removePod(b, id)
		remove = append(remove, time.Since(start))
		i++
	}
	reportPercentiles(b, "RunPodSandbox", run)
	reportPercentiles(b, "StopPodSandbox", stop)
	reportPercentiles(b, "RemovePodSandbox", remove)
}

// BenchmarkPodMemory runs 20 pods of one container each at once and
// reports what the runtime costs each pod: its share of the shims' (each
// serves a group of pods) and (none, as kubelet runs pods by default) its
// ketch-init's RSS and PSS (PSS splits the pages the pods share, the
// binaries' text mostly, among them). The containers' own programs are not
// counted.
func BenchmarkPodMemory(b *testing.B) {
	const pods = 20
	d := startKetchd(b, daemonOpts{network: true})
	d.mustPull(b, busybox)
	for b.Loop() {
		var ids []string
		for i := range pods {
			id, cfg, _ := d.podWithLogs(b, fmt.Sprintf("mem-%d", i))
			ids = append(ids, id)
			ctr := d.createContainer(b, id, cfg, containerConfig("app", "sleep", "3600"))
			d.startContainer(b, ctr)
		}
		time.Sleep(time.Second) // let the Go runtimes settle after start-up
		var shimRSS, shimPSS, initRSS, initPSS float64
		shims := map[int]bool{}
		for _, id := range ids {
			if pid := d.shimPID(id); !shims[pid] {
				shims[pid] = true
				r, p := memoryOf(b, pid)
				shimRSS, shimPSS = shimRSS+r, shimPSS+p
			}
			if pid, err := d.initPID(id); err != nil {
				b.Fatal(err)
			} else if pid > 0 {
				r, p := memoryOf(b, pid)
				initRSS, initPSS = initRSS+r, initPSS+p
			}
		}
		b.ReportMetric(float64(len(shims)), "shims")
		b.ReportMetric(shimRSS/pods, "shim-RSS-MiB/pod")
		b.ReportMetric(shimPSS/pods, "shim-PSS-MiB/pod")
		b.ReportMetric(initRSS/pods, "init-RSS-MiB/pod")
		b.ReportMetric(initPSS/pods, "init-PSS-MiB/pod")
		b.ReportMetric((shimRSS+initRSS)/pods, "RSS-MiB/pod")
		b.ReportMetric((shimPSS+initPSS)/pods, "PSS-MiB/pod")
		for _, id := range ids {
			d.removePod(b, id)
		}
	}
}

// memoryOf returns pid's RSS and PSS in MiB.
func memoryOf(tb testing.TB, pid int) (rss, pss float64) {
	tb.Helper()
	rss, pss, err := readMemory(pid)
	if err != nil {
		tb.Fatal(err)
	}
	return rss, pss
}

func readMemory(pid int) (rss, pss float64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "Rss:":
			rss = kb / 1024
		case "Pss:":
			pss = kb / 1024
		}
	}
	return rss, pss, nil
}

// reportPercentiles reports p50 and p90 of ds in milliseconds.
func reportPercentiles(b *testing.B, what string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(ds[len(ds)/2]), what+"-p50-ms")
	b.ReportMetric(ms(ds[len(ds)*9/10]), what+"-p90-ms")
}

// BenchmarkContainer runs b.N containers one after another (`make bench`
// runs 50) in one pod, and reports the p50 and p90 of CreateContainer +
// StartContainer and of StopContainer + RemoveContainer. The program exits
// on TERM, so the stop measures the runtime, not a grace period.
func BenchmarkContainer(b *testing.B) {
	d := startKetchd(b, daemonOpts{network: true})
	d.mustPull(b, busybox)
	pod, cfg, _ := d.podWithLogs(b, "bench-ctr")
	var start, stop []time.Duration
	i := 0
	for b.Loop() {
		ccfg := containerConfig(fmt.Sprintf("c%d", i), "sleep", "3600")
		ccfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD // not PID 1: TERM ends it
		t0 := time.Now()
		id := d.createContainer(b, pod, cfg, ccfg)
		d.startContainer(b, id)
		start = append(start, time.Since(t0))
		t0 = time.Now()
		if _, err := d.rt.StopContainer(ctxT(b, 30*time.Second), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 10}); err != nil {
			b.Fatal(err)
		}
		if _, err := d.rt.RemoveContainer(ctxT(b, 30*time.Second), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			b.Fatal(err)
		}
		stop = append(stop, time.Since(t0))
		i++
	}
	reportPercentiles(b, "CreateStart", start)
	reportPercentiles(b, "StopRemove", stop)
	d.removePod(b, pod)
}

// BenchmarkExecSync is the round trip of ExecSync running `true` in a
// running container (`make bench` reports p50 and p90 over 50).
func BenchmarkExecSync(b *testing.B) {
	d := startKetchd(b, daemonOpts{network: true})
	d.mustPull(b, busybox)
	pod, cfg, _ := d.podWithLogs(b, "bench-exec")
	id := d.createContainer(b, pod, cfg, containerConfig("target", "sleep", "3600"))
	d.startContainer(b, id)
	var took []time.Duration
	for b.Loop() {
		t0 := time.Now()
		resp, err := d.rt.ExecSync(ctxT(b, 10*time.Second), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"true"}, Timeout: 5})
		if err != nil || resp.ExitCode != 0 {
			b.Fatalf("ExecSync true: %v, %v", resp, err)
		}
		took = append(took, time.Since(t0))
	}
	reportPercentiles(b, "ExecSync", took)
	d.removePod(b, pod)
}

// BenchmarkWorkflowStop is the time from StopContainer to the exit of the
// seed's step (a shell that runs a TERM-trapping main without exec), with
// ketch-init as PID 1 and with the bare shell, which swallows TERM and is
// KILLed at the timeout (1 s here).
func BenchmarkWorkflowStop(b *testing.B) {
	d := startKetchd(b, daemonOpts{network: true})
	d.mustPull(b, workflowImage)
	pod, cfg, _ := d.podWithLogs(b, "bench-wf")
	for _, withInit := range []bool{true, false} {
		b.Run(map[bool]string{true: "init", false: "bare"}[withInit], func(b *testing.B) {
			var took []time.Duration
			i := 0
			for b.Loop() {
				b.StopTimer()
				ccfg := containerConfig(fmt.Sprintf("wf-%v-%d", withInit, i))
				ccfg.Image.Image = workflowImage
				if withInit {
					ccfg.Annotations = map[string]string{"ketch.dev/init": "true"}
				}
				id := d.createContainer(b, pod, cfg, ccfg)
				d.startContainer(b, id)
				waitLog(b, filepath.Join(cfg.LogDirectory, ccfg.LogPath), "main started")
				b.StartTimer()
				t0 := time.Now()
				if _, err := d.rt.StopContainer(ctxT(b, 30*time.Second), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(t0))
				b.StopTimer()
				if _, err := d.rt.RemoveContainer(ctxT(b, 30*time.Second), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				i++
			}
			reportPercentiles(b, "StopToExit", took)
		})
	}
	d.removePod(b, pod)
}

// BenchmarkInitMemory reports what ketch-init costs a container as its
// PID 1: its RSS and PSS with 20 such containers running.
func BenchmarkInitMemory(b *testing.B) {
	const n = 20
	d := startKetchd(b, daemonOpts{network: true})
	d.mustPull(b, busybox)
	pod, cfg, _ := d.podWithLogs(b, "bench-initmem")
	for b.Loop() {
		var pids []int
		for i := range n {
			ccfg := containerConfig(fmt.Sprintf("m%d", i), "sleep", "3600")
			ccfg.Annotations = map[string]string{"ketch.dev/init": "true"}
			id := d.createContainer(b, pod, cfg, ccfg)
			d.startContainer(b, id)
			pids = append(pids, d.ctrPID(b, id))
		}
		time.Sleep(time.Second)
		var rss, pss float64
		for _, pid := range pids {
			r, p := memoryOf(b, pid)
			rss, pss = rss+r, pss+p
		}
		b.ReportMetric(rss/n, "init-RSS-MiB/container")
		b.ReportMetric(pss/n, "init-PSS-MiB/container")
	}
	d.removePod(b, pod)
}

// ctrPID is the host PID of a running container's init, from the verbose
// status.
func (d *daemon) ctrPID(tb testing.TB, id string) int {
	tb.Helper()
	resp, err := d.rt.ContainerStatus(ctxT(tb, 10*time.Second), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		tb.Fatal(err)
	}
	var v struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(resp.Info["info"]), &v); err != nil || v.PID <= 0 {
		tb.Fatalf("container %s: pid %d, %v", id, v.PID, err)
	}
	return v.PID
}

// BenchmarkRestart is ketchd's restart under 110 running pods (kubelet's
// default pod limit): from exec to a served Version call, and the first
// ListPodSandbox and ListContainers after it.
func BenchmarkRestart(b *testing.B) {
	const pods = 110
	d := startKetchd(b, daemonOpts{network: true})
	for i := range pods {
		d.runPod(b, podConfig(b, fmt.Sprintf("r%d", i)))
	}
	for b.Loop() {
		d.stop(b)
		t0 := time.Now()
		d = restart(b, d)
		for {
			if _, err := d.rt.Version(ctxT(b, time.Second), &runtimeapi.VersionRequest{}); err == nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		serving := time.Since(t0)
		t1 := time.Now()
		if got := len(d.pods(b, nil)); got != pods {
			b.Fatalf("%d pods listed after the restart, want %d", got, pods)
		}
		list := time.Since(t1)
		t2 := time.Now()
		if _, err := d.rt.ListContainers(ctxT(b, 10*time.Second), &runtimeapi.ListContainersRequest{}); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(serving.Microseconds())/1000, "restart-to-serving-ms")
		b.ReportMetric(float64(list.Microseconds())/1000, "first-ListPodSandbox-ms")
		b.ReportMetric(float64(time.Since(t2).Microseconds())/1000, "first-ListContainers-ms")
	}
}
