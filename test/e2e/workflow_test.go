//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// workflowImage is test/images' seed step: CMD sh -c /usr/bin/run.sh, where
// run.sh runs /usr/bin/main (which traps TERM) without exec.
const workflowImage = registry + "/ketch-test/workflow:1"

// workflowDaemon runs ketchd with short workflow bounds, so the tests need
// not wait out the defaults.
func workflowDaemon(t *testing.T) *daemon {
	d := startKetchd(t, daemonOpts{network: true, extra: "[workflow]\nkill_grace = \"1s\"\nsidecar_grace = \"2s\"\nresult_cap = 65536"})
	d.mustPull(t, busybox)
	return d
}

// TestInitForwardsTERM is the seed's case: `sh -c /usr/bin/run.sh`, where
// run.sh runs main without exec and main traps TERM to clean up. Without
// ketch-init the shell is PID 1, ignores TERM and main is killed at the
// timeout; with it main gets TERM and the container ends at once.
func TestInitForwardsTERM(t *testing.T) {
	d := workflowDaemon(t)
	d.mustPull(t, workflowImage)
	pod, podCfg, _ := d.podWithLogs(t, "seed")
	const timeout = 4
	for _, withInit := range []bool{false, true} {
		name := map[bool]string{false: "bare", true: "init"}[withInit]
		t.Run(name, func(t *testing.T) {
			// The image's own CMD: sh -c /usr/bin/run.sh.
			cfg := containerConfig(name)
			cfg.Image.Image = workflowImage
			if withInit {
				cfg.Annotations = map[string]string{"ketch.dev/init": "true"}
			}
			id := d.createContainer(t, pod, podCfg, cfg)
			d.startContainer(t, id)
			log := d.ctrStatus(t, id).LogPath
			waitLog(t, log, "main started")
			start := time.Now()
			if _, err := d.rt.StopContainer(ctxT(t, 30*time.Second), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: timeout}); err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			st := d.ctrStatus(t, id)
			gotTERM := strings.Contains(readLog(t, log), "main got TERM")
			if withInit {
				if !gotTERM || st.ExitCode != 143 || took > timeout*time.Second/2 {
					t.Errorf("with ketch-init: main got TERM %v, exit %d after %v; want TERM seen, 143, well before the %ds timeout", gotTERM, st.ExitCode, took, timeout)
				}
			} else if gotTERM || st.ExitCode != 137 || took < timeout*time.Second {
				t.Errorf("without ketch-init: main got TERM %v, exit %d after %v; want the shell to swallow it and a KILL at the timeout", gotTERM, st.ExitCode, took)
			}
		})
	}
	d.removePod(t, pod)
	d.checkPodGone(t, pod)
}

// TestInitReapsAndEndsOrphans: a script leaves 50 background children and
// exits; under ketch-init none stays a zombie, none outlives it, and the
// container's exit code is the script's.
func TestInitReapsAndEndsOrphans(t *testing.T) {
	d := workflowDaemon(t)
	pod, podCfg, _ := d.podWithLogs(t, "orphans")
	cfg := containerConfig("orphans", "sh", "-c", "for i in $(seq 50); do (sleep 30 &); done; touch /tmp/forked; sleep 2; exit 7")
	cfg.Annotations = map[string]string{"ketch.dev/init": "true"}
	id := d.createContainer(t, pod, podCfg, cfg)
	d.startContainer(t, id)
	// Once every orphan is forked, and a moment for the subshells that
	// forked them to exit and be reaped.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, code := d.exec(t, id, "test", "-e", "/tmp/forked"); code == 0 {
			break
		}
	}
	time.Sleep(500 * time.Millisecond)
	zombies := 0
	for _, pid := range processesOf(id) {
		if st, _ := procState(pid); st == 'Z' {
			zombies++
		}
	}
	if zombies > 0 {
		t.Errorf("%d zombies while the script runs", zombies)
	}
	if n := len(processesOf(id)); n < 50 {
		t.Fatalf("%d processes in the container, want the 50 orphans alive", n)
	}
	st := d.waitExited(t, id, 10*time.Second)
	if st.ExitCode != 7 {
		t.Errorf("exit code %d, want the script's 7", st.ExitCode)
	}
	if left := processesOf(id); len(left) > 0 {
		t.Errorf("%d processes outlived the container's exit", len(left))
	}
	d.removePod(t, pod)
	d.checkPodGone(t, pod)
}

// TestResultCapture: the container's stdout comes back as its result,
// byte for byte in verbose status, trimmed of one newline, capped and
// valid UTF-8 in the status message, every time: `make test` runs 1,000
// containers (KETCH_RESULT_RUNS changes it), cycling through the payloads.
func TestResultCapture(t *testing.T) {
	runs := envInt("KETCH_RESULT_RUNS", 1000)
	d := workflowDaemon(t)
	pod, podCfg, _ := d.podWithLogs(t, "results")
	cases := []struct {
		desc      string
		cmd       string
		want      []byte
		message   string
		truncated bool
	}{
		{"with a newline", "echo 42", []byte("42\n"), "42", false},
		{"without a newline", "printf 42", []byte("42"), "42", false},
		{"empty", "true", nil, "", false},
		{"4 KiB and one", "head -c 4097 /dev/zero | tr '\\0' a", bytes.Repeat([]byte("a"), 4097), strings.Repeat("a", 4096), false},
		{"1 MiB, past the cap", "head -c 1048576 /dev/zero | tr '\\0' b", bytes.Repeat([]byte("b"), 65536), strings.Repeat("b", 4096), true},
		{"binary", "printf 'ok\\377\\000x'", []byte("ok\xff\x00x"), "ok\uFFFD\x00x", false},
	}
	bad := map[string]int{}
	for i := range runs {
		tc := cases[i%len(cases)]
		cfg := containerConfig(fmt.Sprintf("result-%d", i), "sh", "-c", tc.cmd)
		cfg.Annotations = map[string]string{"ketch.dev/result": "stdout"}
		id := d.createContainer(t, pod, podCfg, cfg)
		d.startContainer(t, id)
		st := d.waitExited(t, id, 10*time.Second)
		resp, err := d.rt.ContainerStatus(ctxT(t, 10*time.Second), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
		if err != nil {
			t.Fatal(err)
		}
		var info struct {
			Result          []byte `json:"result"`
			ResultTruncated bool   `json:"resultTruncated"`
		}
		if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil {
			t.Fatal(err)
		}
		if st.Message != tc.message || !bytes.Equal(info.Result, tc.want) || info.ResultTruncated != tc.truncated {
			if bad[tc.desc]++; bad[tc.desc] == 1 {
				t.Errorf("%s: exit %d %s, message %.30q (%d bytes), result %d bytes (truncated %v); want %.30q (%d), %d bytes (truncated %v)",
					tc.desc, st.ExitCode, st.Reason, st.Message, len(st.Message), len(info.Result), info.ResultTruncated, tc.message, len(tc.message), len(tc.want), tc.truncated)
			}
		}
		if _, err := d.rt.RemoveContainer(ctxT(t, 10*time.Second), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
	}
	for desc, n := range bad {
		t.Errorf("%s: %d of %d runs had a wrong result", desc, n, (runs+len(cases)-1)/len(cases))
	}
	t.Logf("%d containers, %d wrong results", runs, len(bad))
	d.removePod(t, pod)
	d.checkPodGone(t, pod)
}

// TestSidecarsStopWithMain: once the container the pod names main exits,
// a sidecar that ignores TERM is gone within the sidecar grace, and a
// container ketch.dev/sidecars does not list (Argo's wait) keeps running.
func TestSidecarsStopWithMain(t *testing.T) {
	d := workflowDaemon(t)
	cfg := podConfig(t, "step")
	cfg.LogDirectory = t.TempDir()
	cfg.Annotations = map[string]string{"ketch.dev/main": "main", "ketch.dev/sidecars": "sidecar"}
	pod := d.runPod(t, cfg)
	sidecar := d.createContainer(t, pod, cfg, containerConfig("sidecar", "sh", "-c", "trap '' TERM; while true; do sleep 1; done"))
	d.startContainer(t, sidecar)
	helper := d.createContainer(t, pod, cfg, containerConfig("wait", "sleep", "300"))
	d.startContainer(t, helper)
	main := d.createContainer(t, pod, cfg, containerConfig("main", "sh", "-c", "sleep 1; exit 0"))
	d.startContainer(t, main)
	d.waitExited(t, main, 10*time.Second)
	start := time.Now()
	st := d.waitExited(t, sidecar, 10*time.Second)
	if took := time.Since(start); took > 2*time.Second+2*time.Second || st.ExitCode != 137 {
		t.Errorf("the sidecar exited %d after %v; want KILLed (137) within its 2 s grace", st.ExitCode, took)
	}
	if st := d.ctrStatus(t, helper); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("a container ketch.dev/sidecars does not list was stopped: %v", st.State)
	}
	d.removePod(t, pod)
	d.checkPodGone(t, pod)
}

// waitLog waits until the log file at path holds want.
func waitLog(tb testing.TB, path, want string) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, _ := os.ReadFile(path); strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s never showed %q", path, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWorkflowBadInput: an unknown annotation value is refused naming the
// annotation; a program that is not there under ketch-init exits 127 with
// a message naming it.
func TestWorkflowBadInput(t *testing.T) {
	d := workflowDaemon(t)
	pod, podCfg, _ := d.podWithLogs(t, "wf-bad")
	for key, val := range map[string]string{"ketch.dev/init": "yes", "ketch.dev/result": "stderr"} {
		cfg := containerConfig("bad", "true")
		cfg.Annotations = map[string]string{key: val}
		_, err := d.rt.CreateContainer(ctxT(t, 10*time.Second), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), key) {
			t.Errorf("%s=%q: %v, want InvalidArgument naming it", key, val, err)
		}
	}
	d.checkNoContainerLeft(t)
	cfg := containerConfig("missing", "/no/such/entrypoint")
	cfg.Annotations = map[string]string{"ketch.dev/init": "true"}
	id := d.createContainer(t, pod, podCfg, cfg)
	d.startContainer(t, id)
	st := d.waitExited(t, id, 10*time.Second)
	if st.ExitCode != 127 || !strings.Contains(readLog(t, st.LogPath), "/no/such/entrypoint") {
		t.Errorf("exit %d, log %q: want 127 and the missing program named", st.ExitCode, readLog(t, st.LogPath))
	}
	// A result survives its container's OOM kill, up to the kill; one that
	// closes stdout early has what it wrote before.
	for _, tc := range []struct {
		desc, cmd      string
		limit          int64
		reason, result string
	}{
		{"OOM kill while writing", "echo partial; tail /dev/zero", 16 << 20, "OOMKilled", "partial"},
		{"stdout closed early", "echo early; exec 1>&-; sleep 0.2; echo late >&2", 0, "Completed", "early"},
	} {
		cfg := containerConfig(strings.ReplaceAll(tc.desc, " ", "-"), "sh", "-c", tc.cmd)
		cfg.Annotations = map[string]string{"ketch.dev/result": "stdout"}
		if tc.limit > 0 {
			cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: tc.limit}
		}
		id := d.createContainer(t, pod, podCfg, cfg)
		d.startContainer(t, id)
		if st := d.waitExited(t, id, 30*time.Second); st.Reason != tc.reason || st.Message != tc.result {
			t.Errorf("%s: reason %q, message %q; want %q, %q", tc.desc, st.Reason, st.Message, tc.reason, tc.result)
		}
	}
	d.removePod(t, pod)
	d.checkPodGone(t, pod)
}
