//go:build e2e

package e2e

// The kubelet suite: a real kubelet (and API server) runs pods on ketch, and
// each case checks what a user checks, through kubectl and the pod's status.
// `make e2e-kubelet` runs it alone; `make test` with everything else.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The images the cases' manifests name as {{busybox}} and so on.
var manifestImages = strings.NewReplacer(
	"{{busybox}}", busybox,
	"{{nginx}}", registry+"/e2e-test-images/nginx:1.14-2",
	"{{grpc}}", registry+"/ketch-test/grpc-health:1",
	"{{workflow}}", registry+"/ketch-test/workflow:1",
	"{{multilayer}}", multilayer,
)

// kubeletConfig is the suite's KubeletConfiguration on top of the harness's:
// small logs rotated often, and images unused for a minute collected at
// kubelet's next image GC (every 5 minutes).
const kubeletConfig = `containerLogMaxSize: 16Ki
containerLogMaxFiles: 3
containerLogMonitorInterval: 3s
imageMinimumGCAge: 10s
imageMaximumGCAge: 1m`

// kubeletGates are the feature gates of the suite's cluster: those of the
// CRI features ketch serves that kubelet keeps behind one.
const kubeletGates = "ContainerStopSignals=true"

// TestKubelet runs the cases side by side on one cluster, then those that
// restart the kubelet or ketchd one after another, then checks that deleting
// every pod leaves nothing of them on the host.
func TestKubelet(t *testing.T) {
	c := startCluster(t, clusterOpts{kubelet: kubeletConfig, gates: kubeletGates})
	cases := []struct {
		name string
		run  func(*testing.T, *cluster)
	}{
		{"ImageGC", kubeletImageGC},
		{"Lifecycle", kubeletLifecycle},
		{"GracePeriod", kubeletGracePeriod},
		{"ExitCodes", kubeletExitCodes},
		{"StaticPod", kubeletStaticPod},
		{"InitAndSidecar", kubeletInitAndSidecar},
		{"ShareProcessNamespace", kubeletShareProcessNamespace},
		{"Volumes", kubeletVolumes},
		{"Probes", kubeletProbes},
		{"GRPCProbe", kubeletGRPCProbe},
		{"RestartPolicies", kubeletRestartPolicies},
		{"CrashLoopBackOff", kubeletCrashLoopBackOff},
		{"Resources", kubeletResources},
		{"Resize", kubeletResize},
		{"Hugepages", kubeletHugepages},
		{"OOMKilled", kubeletOOMKilled},
		{"TerminationMessage", kubeletTerminationMessage},
		{"HostNamespaces", kubeletHostNamespaces},
		{"HostPort", kubeletHostPort},
		{"DNSAndSysctls", kubeletDNSAndSysctls},
		{"SecurityContext", kubeletSecurityContext},
		{"UserNamespace", kubeletUserNamespace},
		{"Streaming", kubeletStreaming},
		{"PullPolicies", kubeletPullPolicies},
		{"PullSecret", kubeletPullSecret},
		{"LogRotation", kubeletLogRotation},
		{"LifecycleHooks", kubeletLifecycleHooks},
		{"EphemeralContainer", kubeletEphemeralContainer},
		{"Privileged", kubeletPrivileged},
		{"RuntimeClass", kubeletRuntimeClass},
		{"Stats", kubeletStats},
		{"StopSignal", kubeletStopSignal},
		{"PodResize", kubeletPodResize},
		{"ImageVolume", kubeletImageVolume},
	}
	// A few cases per CPU at a time: with all of them starting pods at once,
	// a two-CPU node spends a minute on kubelet, the API server and etcd, and
	// the cases' waits measure that. ImageGC only waits for kubelet's image
	// GC (5 minutes from kubelet's start), so it starts first and takes no
	// slot.
	slots := make(chan struct{}, 4*runtime.NumCPU())
	t.Run("parallel", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				if tc.name != "ImageGC" {
					slots <- struct{}{}
					defer func() { <-slots }()
				}
				tc.run(t, c)
			})
		}
	})
	t.Run("KubeletRestart", func(t *testing.T) { kubeletRestart(t, c) })
	t.Run("KetchdRestart", func(t *testing.T) { ketchdRestart(t, c, false) })
	t.Run("KetchdKilled", func(t *testing.T) { ketchdRestart(t, c, true) })
	t.Run("EventedPLEG", func(t *testing.T) { kubeletEventedPLEG(t, c) })
	t.Run("ListStreaming", func(t *testing.T) { kubeletListStreaming(t, c) })
	t.Run("StatsFromCRI", func(t *testing.T) { kubeletStatsFromCRI(t, c) })
	t.Run("Standalone", func(t *testing.T) { kubeletStandalone(t, c) })
	t.Run("NothingLeft", func(t *testing.T) { kubeletNothingLeft(t, c) })
}

// apply creates the objects of a manifest whose images are named as
// manifestImages lists them.
func (c *cluster) applyPods(t *testing.T, ns, manifest string) {
	t.Helper()
	c.apply(t, ns, manifestImages.Replace(manifest))
}

// runtimeSandboxes lists the pod sandboxes ketch holds for pods named name
// in namespace ns.
func (c *cluster) runtimeSandboxes(t *testing.T, ns, name string) []*runtimeapi.PodSandbox {
	t.Helper()
	resp, err := c.d.rt.ListPodSandbox(ctxT(t, 10*time.Second), &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		LabelSelector: map[string]string{"io.kubernetes.pod.namespace": ns, "io.kubernetes.pod.name": name},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Items
}

// waitSandboxStopped waits until ketch holds no ready sandbox of pod ns/name.
func (c *cluster) waitSandboxStopped(t *testing.T, ns, name string) {
	t.Helper()
	waitFor(t, 60*time.Second, "sandbox of "+ns+"/"+name+" stopped in ketch", func() bool {
		for _, s := range c.runtimeSandboxes(t, ns, name) {
			if s.State == runtimeapi.PodSandboxState_SANDBOX_READY {
				return false
			}
		}
		return true
	})
}

// kubeletLifecycle: a pod through the API server runs, its output is in
// `kubectl logs` and in kubelet's pod log directory, and deleting it sends
// TERM, which the program handles.
func kubeletLifecycle(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	host := t.TempDir()
	c.applyPods(t, ns, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: life}
spec:
  terminationGracePeriodSeconds: 30
  volumes: [{name: host, hostPath: {path: %s, type: Directory}}]
  containers:
  - name: main
    image: {{busybox}}
    command: [sh, -c, 'echo started; echo to stderr >&2; trap "echo got TERM > /host/term; exit 0" TERM; while true; do sleep 0.1; done']
    volumeMounts: [{name: host, mountPath: /host}]
`, host))
	p := c.waitPod(t, ns, "life", "running", 60*time.Second, podRunning)
	// stdout and stderr are two pipes, copied each on its own: either line
	// may reach the log first, as with containerd.
	waitFor(t, 30*time.Second, "kubectl logs", func() bool {
		out, _ := c.kubectl("", "logs", "-n", ns, "life")
		return out == "started\nto stderr\n" || out == "to stderr\nstarted\n"
	})
	logFile := filepath.Join(c.podLogs, fmt.Sprintf("%s_life_%s", ns, p.UID), "main", "0.log")
	if log := readFile(t, logFile); !strings.Contains(log, " stdout F started\n") || !strings.Contains(log, " stderr F to stderr\n") {
		t.Errorf("%s:\n%s", logFile, log)
	}
	if s := ctrStatus(p, "main"); s == nil || !strings.HasPrefix(s.ContainerID, "ketch://") || s.ImageID == "" || !s.Ready {
		t.Errorf("container status %+v", s)
	}
	start := time.Now()
	c.mustKubectl(t, "", "delete", "pod", "-n", ns, "life", "--wait=true")
	// Under the 30s grace period: TERM, not KILL, ended the program.
	if took := time.Since(start); took > 25*time.Second {
		t.Errorf("deletion took %v: TERM did not end the program", took)
	}
	if b, err := os.ReadFile(filepath.Join(host, "term")); err != nil || string(b) != "got TERM\n" {
		t.Errorf("the program's TERM handler did not run: %q %v", b, err)
	}
	c.waitSandboxStopped(t, ns, "life")
}

// kubeletGracePeriod: a program that ignores TERM is KILLed at the end of
// the grace period, not before and not much after.
func kubeletGracePeriod(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 4
  containers:
  - name: main
    image: {{busybox}}
    command: [sh, -c, 'trap "echo ignoring TERM" TERM; echo ready; while true; do sleep 0.1; done']
`)
	p := c.waitPod(t, ns, "stubborn", "running", 60*time.Second, podRunning)
	waitFor(t, 10*time.Second, "the trap set", func() bool { out, _ := c.kubectl("", "logs", "-n", ns, "stubborn"); return out == "ready\n" })
	id := strings.TrimPrefix(ctrStatus(p, "main").ContainerID, "ketch://")
	// The container's end as ketch saw it: kubelet removes it soon after.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ended := make(chan *runtimeapi.ContainerStatus, 1)
	go func() {
		for ctx.Err() == nil {
			resp, err := c.d.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
			if err != nil || resp.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED {
				ended <- resp.GetStatus()
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		ended <- nil
	}()
	start := time.Now()
	c.mustKubectl(t, "", "delete", "pod", "-n", ns, "stubborn", "--wait=true")
	if took := time.Since(start); took < 3500*time.Millisecond {
		t.Errorf("deletion took %v, want the 4s grace period", took)
	}
	s := <-ended
	if s == nil {
		t.Fatal("ketch was not seen to end the container")
	}
	// Killed, not ended by TERM, and not before the grace period ran out;
	// the upper bound leaves room for a loaded kubelet's late StopContainer.
	if ran := time.Unix(0, s.FinishedAt).Sub(start); s.ExitCode != 137 || ran < 3500*time.Millisecond || ran > 30*time.Second {
		t.Errorf("the container ended %v after the deletion with exit code %d, want KILLed (137) after the 4s grace period", ran, s.ExitCode)
	}
}

// kubeletExitCodes: exit codes and reasons reach the pod status.
func kubeletExitCodes(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: exits}
spec:
  restartPolicy: Never
  containers:
  - {name: ok, image: "{{busybox}}", command: [sh, -c, 'exit 0']}
  - {name: seven, image: "{{busybox}}", command: [sh, -c, 'exit 7']}
  - {name: missing, image: "{{busybox}}", command: [/no/such/program]}
`)
	p := c.waitPod(t, ns, "exits", "failed", 60*time.Second, podDone)
	if p.Status.Phase != corev1.PodFailed {
		t.Errorf("phase %s, want Failed", p.Status.Phase)
	}
	for _, w := range []struct {
		name   string
		code   int32
		reason string
	}{{"ok", 0, "Completed"}, {"seven", 7, "Error"}, {"missing", 128, "StartError"}} {
		if s := terminated(p, w.name); s == nil || s.ExitCode != w.code || s.Reason != w.reason {
			t.Errorf("%s terminated %+v, want %d %s", w.name, s, w.code, w.reason)
		}
	}
	if s := terminated(p, "missing"); s != nil && !strings.Contains(s.Message, "/no/such/program") {
		t.Errorf("missing program's message %q does not name it", s.Message)
	}
}

// kubeletStaticPod: a static pod from the manifest directory runs, has its
// mirror pod, and goes when its manifest does.
func kubeletStaticPod(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	manifest := filepath.Join(c.dir, "manifests", ns+".yaml")
	if err := os.WriteFile(manifest, []byte(manifestImages.Replace(fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: static, namespace: %s}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - {name: main, image: "{{busybox}}", command: [sh, -c, 'echo static pod; exec sleep 3600']}
`, ns))), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(manifest)
	mirror := "static-" + testNode
	c.waitPod(t, ns, mirror, "running", 60*time.Second, podRunning)
	waitFor(t, 10*time.Second, "static pod's logs", func() bool {
		out, _ := c.kubectl("", "logs", "-n", ns, mirror)
		return out == "static pod\n"
	})
	if n := len(c.runtimeSandboxes(t, ns, mirror)); n != 1 {
		t.Errorf("ketch holds %d sandboxes of the static pod, want 1", n)
	}
	os.Remove(manifest)
	c.waitGone(t, ns, mirror, 60*time.Second)
	c.waitSandboxStopped(t, ns, mirror)
}

// kubeletInitAndSidecar: init containers run in order and to completion
// before the sidecar starts, and the sidecar before the main container.
func kubeletInitAndSidecar(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: ordered}
spec:
  terminationGracePeriodSeconds: 2
  volumes: [{name: w, emptyDir: {}}]
  initContainers:
  - {name: first, image: "{{busybox}}", command: [sh, -c, 'echo first >> /w/order'], volumeMounts: [{name: w, mountPath: /w}]}
  - {name: second, image: "{{busybox}}", command: [sh, -c, 'echo second >> /w/order'], volumeMounts: [{name: w, mountPath: /w}]}
  - name: sidecar
    image: {{busybox}}
    restartPolicy: Always
    command: [sh, -c, 'echo sidecar >> /w/order; exec sleep 3600']
    volumeMounts: [{name: w, mountPath: /w}]
    startupProbe: {exec: {command: [grep, sidecar, /w/order]}, periodSeconds: 1}
  containers:
  - {name: main, image: "{{busybox}}", command: [sh, -c, 'echo main >> /w/order; exec sleep 3600'], volumeMounts: [{name: w, mountPath: /w}]}
`)
	p := c.waitPod(t, ns, "ordered", "ready", 90*time.Second, podReady)
	if out := c.exec(t, ns, "ordered", "main", "cat", "/w/order"); out != "first\nsecond\nsidecar\nmain\n" {
		t.Errorf("order of starts %q", out)
	}
	for _, name := range []string{"first", "second"} {
		if s := terminated(p, name); s == nil || s.ExitCode != 0 || s.Reason != "Completed" {
			t.Errorf("init container %s: %+v", name, s)
		}
	}
	if s := ctrStatus(p, "sidecar"); s == nil || s.State.Running == nil || s.Started == nil || !*s.Started {
		t.Errorf("sidecar status %+v", s)
	}
}

// kubeletShareProcessNamespace: the pod's containers see each other's
// processes, and PID 1 is the sandbox's.
func kubeletShareProcessNamespace(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: shared}
spec:
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 2
  containers:
  - {name: a, image: "{{busybox}}", command: [sleep, "3601"]}
  - {name: b, image: "{{busybox}}", command: [sleep, "3602"]}
`)
	c.waitPod(t, ns, "shared", "running", 60*time.Second, podReady)
	ps := c.exec(t, ns, "shared", "a", "ps", "-o", "pid,args")
	if !strings.Contains(ps, "sleep 3602") || !strings.Contains(ps, "sleep 3601") {
		t.Errorf("container a does not see b's process:\n%s", ps)
	}
	if init := c.exec(t, ns, "shared", "b", "cat", "/proc/1/cmdline"); strings.Contains(init, "sleep") {
		t.Errorf("PID 1 is a container's program (%q), not the sandbox's", init)
	}
}
