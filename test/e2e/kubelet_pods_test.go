//go:build e2e

package e2e

// kubelet cases about what runs in a pod: volumes, probes, restarts,
// resources and what a container leaves in the pod status.

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// kubeletVolumes: every common volume type mounts with its content, and a
// subPath mounts only its part.
func kubeletVolumes(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "from-host"), []byte("host file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.mustKubectl(t, "", "create", "configmap", "-n", ns, "conf", "--from-literal=greeting=hello", "--from-literal=other=x")
	c.mustKubectl(t, "", "create", "secret", "generic", "-n", ns, "creds", "--from-literal=password=s3cret")
	c.applyPods(t, ns, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: vols, labels: {app: vols}}
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - {name: disk, emptyDir: {}}
  - {name: mem, emptyDir: {medium: Memory}}
  - {name: conf, configMap: {name: conf}}
  - {name: creds, secret: {secretName: creds}}
  - {name: host, hostPath: {path: %s, type: Directory}}
  - name: info
    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
  - name: token
    projected: {sources: [{serviceAccountToken: {path: token, expirationSeconds: 3600}}]}
  containers:
  - name: writer
    image: {{busybox}}
    command: [sh, -c, 'echo shared > /disk/note; echo in memory > /mem/note; echo from pod > /host/from-pod; exec sleep 3600']
    volumeMounts: [{name: disk, mountPath: /disk}, {name: mem, mountPath: /mem}, {name: host, mountPath: /host}]
  - name: reader
    image: {{busybox}}
    command: [sleep, "3600"]
    env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    volumeMounts:
    - {name: disk, mountPath: /disk}
    - {name: conf, mountPath: /conf}
    - {name: conf, mountPath: /etc/greeting, subPath: greeting}
    - {name: creds, mountPath: /creds}
    - {name: host, mountPath: /host, readOnly: true}
    - {name: info, mountPath: /info}
    - {name: token, mountPath: /token}
    - {name: disk, mountPath: /sub, subPath: dir}
`, host))
	c.waitPod(t, ns, "vols", "running", 60*time.Second, podReady)
	waitFor(t, 10*time.Second, "the writer's files", func() bool {
		_, err := os.Stat(filepath.Join(host, "from-pod"))
		return err == nil
	})
	read := func(path string) string { return c.exec(t, ns, "vols", "reader", "cat", path) }
	for path, want := range map[string]string{
		"/disk/note":      "shared\n",
		"/conf/greeting":  "hello",
		"/etc/greeting":   "hello",
		"/creds/password": "s3cret",
		"/host/from-host": "host file\n",
		"/info/labels":    `app="vols"`,
	} {
		if got := read(path); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	if got := c.exec(t, ns, "vols", "writer", "cat", "/mem/note"); got != "in memory\n" {
		t.Errorf("memory emptyDir: %q", got)
	}
	mounts := c.exec(t, ns, "vols", "writer", "cat", "/proc/mounts")
	if !strings.Contains(mounts, "tmpfs /mem tmpfs") {
		t.Errorf("medium Memory emptyDir is not a tmpfs:\n%s", mounts)
	}
	if got := c.exec(t, ns, "vols", "reader", "sh", "-c", "echo $POD_NAME"); got != "vols\n" {
		t.Errorf("downward API env %q", got)
	}
	token := read("/token/token")
	if parts := strings.Split(token, "."); len(parts) != 3 {
		t.Errorf("projected token %q is not a JWT", token)
	} else if claims, err := base64.RawURLEncoding.DecodeString(parts[1]); err != nil || !strings.Contains(string(claims), `"namespace":"`+ns+`"`) && !strings.Contains(string(claims), `"`+ns+`"`) {
		t.Errorf("token claims %s (%v) do not name namespace %s", claims, err, ns)
	}
	if got := read("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); got != ns {
		t.Errorf("service account namespace file %q", got)
	}
	// subPath: a directory of the volume, made by kubelet, is all the mount shows.
	c.exec(t, ns, "vols", "reader", "sh", "-c", "echo in sub > /sub/file")
	if got := c.exec(t, ns, "vols", "writer", "cat", "/disk/dir/file"); got != "in sub\n" {
		t.Errorf("subPath write seen in the volume as %q", got)
	}
	if out, err := c.kubectl("", "exec", "-n", ns, "vols", "-c", "reader", "--", "touch", "/host/x"); err == nil {
		t.Errorf("a read-only hostPath mount took a write: %s", out)
	}
	if b, err := os.ReadFile(filepath.Join(host, "from-pod")); err != nil || string(b) != "from pod\n" {
		t.Errorf("hostPath write: %q %v", b, err)
	}
}

// kubeletProbes: exec, HTTP and TCP probes as liveness, readiness and
// startup probes; a failing liveness probe restarts the container.
func kubeletProbes(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: {{nginx}}
    livenessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 1, timeoutSeconds: 5}
    readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 1}
  - name: gate
    image: {{busybox}}
    command: [sleep, '3600']
    startupProbe: {exec: {command: [test, -f, /tmp/started]}, periodSeconds: 1, failureThreshold: 600}
    readinessProbe: {exec: {command: [test, -f, /tmp/ready]}, periodSeconds: 1}
  - name: dying
    image: {{busybox}}
    command: [sh, -c, 'touch /tmp/alive; exec sleep 3600']
    livenessProbe: {exec: {command: [test, -f, /tmp/alive]}, periodSeconds: 1, failureThreshold: 2}
`)
	// The startup probe holds gate un-started until the test makes it pass,
	// however slowly the node reports the pod.
	c.waitPod(t, ns, "probed", "gate running", 60*time.Second, func(p *corev1.Pod) bool {
		s := ctrStatus(p, "gate")
		return s != nil && s.State.Running != nil
	})
	time.Sleep(2 * time.Second) // two failed startup probes
	p := c.waitPod(t, ns, "probed", "status", 10*time.Second, podRunning)
	if s := ctrStatus(p, "gate"); s == nil || s.Started == nil || *s.Started {
		t.Errorf("gate started before its startup probe passed: %+v", s)
	}
	c.exec(t, ns, "probed", "gate", "touch", "/tmp/started")
	c.waitPod(t, ns, "probed", "gate started", 30*time.Second, func(p *corev1.Pod) bool {
		s := ctrStatus(p, "gate")
		return s != nil && s.Started != nil && *s.Started
	})
	p = c.waitPod(t, ns, "probed", "web ready", 30*time.Second, func(p *corev1.Pod) bool {
		s := ctrStatus(p, "web")
		return s != nil && s.Ready
	})
	if podReady(p) {
		t.Error("the pod is ready while gate's readiness probe fails")
	}
	c.exec(t, ns, "probed", "gate", "touch", "/tmp/ready")
	c.waitPod(t, ns, "probed", "ready", 30*time.Second, podReady)
	c.exec(t, ns, "probed", "dying", "rm", "/tmp/alive")
	p = c.waitPod(t, ns, "probed", "dying restarted by its liveness probe", 60*time.Second, func(p *corev1.Pod) bool {
		s := ctrStatus(p, "dying")
		return s != nil && s.RestartCount >= 1 && s.State.Running != nil
	})
	if s := ctrStatus(p, "dying"); s.LastTerminationState.Terminated == nil || s.LastTerminationState.Terminated.ExitCode != 137 {
		t.Errorf("dying's last state %+v, want KILLed (137) after the failed probe", s.LastTerminationState)
	}
	if s := ctrStatus(p, "web"); s.RestartCount != 0 {
		t.Errorf("web restarted %d times with a passing liveness probe", s.RestartCount)
	}
}

// kubeletGRPCProbe: kubelet's gRPC probe against a grpc.health.v1 server.
func kubeletGRPCProbe(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: grpc}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: health
    image: {{grpc}}
    readinessProbe: {grpc: {port: 9090}, periodSeconds: 1}
    livenessProbe: {grpc: {port: 9090}, periodSeconds: 1, failureThreshold: 2}
`)
	c.waitPod(t, ns, "grpc", "ready", 60*time.Second, podReady)
	c.exec(t, ns, "grpc", "health", "touch", "/tmp/unhealthy")
	p := c.waitPod(t, ns, "grpc", "restarted on NOT_SERVING", 60*time.Second, func(p *corev1.Pod) bool {
		s := ctrStatus(p, "health")
		return s != nil && s.RestartCount >= 1
	})
	// The restarted container has a fresh /tmp: SERVING again.
	c.waitPod(t, ns, "grpc", "ready again", 60*time.Second, podReady)
	_ = p
}

// kubeletRestartPolicies: Never, OnFailure and Always, as the pod phase and
// restart counts show them.
func kubeletRestartPolicies(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: never}
spec:
  restartPolicy: Never
  containers: [{name: main, image: "{{busybox}}", command: [sh, -c, 'exit 1']}]
---
apiVersion: v1
kind: Pod
metadata: {name: onfailure}
spec:
  restartPolicy: OnFailure
  volumes: [{name: w, emptyDir: {}}]
  containers:
  - name: main
    image: {{busybox}}
    # Fails the first time, succeeds the second: the emptyDir outlives the container.
    command: [sh, -c, 'if [ -f /w/tried ]; then exit 0; fi; touch /w/tried; exit 3']
    volumeMounts: [{name: w, mountPath: /w}]
---
apiVersion: v1
kind: Pod
metadata: {name: always}
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: "{{busybox}}", command: [sh, -c, 'sleep 1; exit 0']}]
`)
	p := c.waitPod(t, ns, "never", "failed", 60*time.Second, podDone)
	if s := ctrStatus(p, "main"); p.Status.Phase != corev1.PodFailed || s.RestartCount != 0 || s.State.Terminated == nil || s.State.Terminated.ExitCode != 1 {
		t.Errorf("never: phase %s, status %+v", p.Status.Phase, s)
	}
	p = c.waitPod(t, ns, "onfailure", "succeeded", 90*time.Second, podDone)
	if s := ctrStatus(p, "main"); p.Status.Phase != corev1.PodSucceeded || s.RestartCount != 1 ||
		s.LastTerminationState.Terminated == nil || s.LastTerminationState.Terminated.ExitCode != 3 {
		t.Errorf("onfailure: phase %s, status %+v", p.Status.Phase, s)
	}
	c.waitPod(t, ns, "always", "restarted after exit 0", 90*time.Second, func(p *corev1.Pod) bool {
		s := ctrStatus(p, "main")
		return s != nil && s.RestartCount >= 1 && p.Status.Phase == corev1.PodRunning
	})
}

// kubeletCrashLoopBackOff: a container that keeps failing is restarted
// with growing back-off and shown as CrashLoopBackOff.
func kubeletCrashLoopBackOff(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: crashing}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: "{{busybox}}", command: [sh, -c, 'echo crashing; exit 2']}]
`)
	p := c.waitPod(t, ns, "crashing", "in CrashLoopBackOff after 2 restarts", 120*time.Second, func(p *corev1.Pod) bool {
		s := ctrStatus(p, "main")
		return s != nil && s.RestartCount >= 2 && s.State.Waiting != nil && s.State.Waiting.Reason == "CrashLoopBackOff"
	})
	s := ctrStatus(p, "main")
	if last := s.LastTerminationState.Terminated; last == nil || last.ExitCode != 2 || last.Reason != "Error" {
		t.Errorf("last termination %+v, want exit 2 Error", s.LastTerminationState)
	}
	if out := c.logs(t, ns, "crashing", "main", "--previous"); out != "crashing\n" {
		t.Errorf("kubectl logs --previous = %q", out)
	}
}

// cgroupValue reads one cgroup v1 file of the container as it sees its own
// cgroup (runc mounts the container's cgroup at /sys/fs/cgroup/<controller>).
func (c *cluster) cgroupValue(t *testing.T, ns, pod, ctr, file string) string {
	t.Helper()
	return strings.TrimSpace(c.exec(t, ns, pod, ctr, "cat", "/sys/fs/cgroup/"+file))
}

// kubeletResources: requests and limits land in the container's cgroup.
func kubeletResources(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: limited}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {{busybox}}
    command: [sleep, "3600"]
    resources:
      requests: {cpu: 250m, memory: 64Mi}
      limits: {cpu: 500m, memory: 128Mi}
`)
	c.waitPod(t, ns, "limited", "running", 60*time.Second, podReady)
	for file, want := range map[string]string{
		"cpu/cpu.shares":               "256",
		"cpu/cpu.cfs_quota_us":         "50000",
		"cpu/cpu.cfs_period_us":        "100000",
		"memory/memory.limit_in_bytes": "134217728",
	} {
		if got := c.cgroupValue(t, ns, "limited", "main", file); got != want {
			t.Errorf("%s = %s, want %s", file, got, want)
		}
	}
}

// kubeletResize: an in-place resize changes the running container's
// cgroup without a restart, and the pod status reports the new values.
func kubeletResize(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: resized}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {{busybox}}
    command: [sleep, "3600"]
    resources:
      requests: {cpu: 200m, memory: 64Mi}
      limits: {cpu: 200m, memory: 64Mi}
`)
	before := c.waitPod(t, ns, "resized", "running", 60*time.Second, podReady)
	c.mustKubectl(t, "", "patch", "pod", "-n", ns, "resized", "--subresource", "resize", "--patch",
		`{"spec":{"containers":[{"name":"main","resources":{"requests":{"cpu":"400m","memory":"96Mi"},"limits":{"cpu":"400m","memory":"96Mi"}}}]}}`)
	p := c.waitPod(t, ns, "resized", "resized", 60*time.Second, func(p *corev1.Pod) bool {
		s := ctrStatus(p, "main")
		return s != nil && s.Resources != nil && s.Resources.Limits.Cpu().MilliValue() == 400 && s.Resources.Limits.Memory().Value() == 96<<20
	})
	if got := c.cgroupValue(t, ns, "resized", "main", "cpu/cpu.cfs_quota_us"); got != "40000" {
		t.Errorf("cpu quota after resize %s, want 40000", got)
	}
	if got := c.cgroupValue(t, ns, "resized", "main", "memory/memory.limit_in_bytes"); got != fmt.Sprint(96<<20) {
		t.Errorf("memory limit after resize %s, want %d", got, 96<<20)
	}
	if s := ctrStatus(p, "main"); s.RestartCount != 0 || s.ContainerID != ctrStatus(before, "main").ContainerID {
		t.Errorf("the resize restarted the container: %+v", s)
	}
	checkPodCPUQuota(t, p, "40000")
}

// kubeletHugepages: a hugepage limit reaches the container's cgroup where
// the node can apply one.
func kubeletHugepages(t *testing.T, c *cluster) {
	if _, err := os.Stat("/sys/fs/cgroup/hugetlb"); err != nil {
		t.Skip("this host's kernel has the hugetlb controller (/proc/cgroups) but does not mount it (no /sys/fs/cgroup/hugetlb): no hugepage limit can be applied; kubelet's zero limits for every page size are dropped, as the other cases show by running at all")
	}
	if b, _ := os.ReadFile("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"); strings.TrimSpace(string(b)) == "0" {
		t.Skip("no 2 MiB hugepages reserved on this host (nr_hugepages 0): kubelet reports no hugepages-2Mi capacity to schedule against")
	}
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: huge}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {{busybox}}
    command: [sleep, "3600"]
    resources:
      limits: {hugepages-2Mi: 4Mi, memory: 64Mi, cpu: 100m}
`)
	c.waitPod(t, ns, "huge", "running", 60*time.Second, podReady)
	if got := c.cgroupValue(t, ns, "huge", "main", "hugetlb/hugetlb.2MB.limit_in_bytes"); got != fmt.Sprint(4<<20) {
		t.Errorf("hugetlb limit %s, want %d", got, 4<<20)
	}
}

// kubeletOOMKilled: a container over its memory limit is OOM-killed and
// the pod status says so.
func kubeletOOMKilled(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: hungry}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: {{busybox}}
    # tail keeps a line in memory until its end: 200 MiB of zeros is one line.
    command: [sh, -c, 'head -c 200m /dev/zero | tail']
    resources: {limits: {memory: 32Mi}}
`)
	p := c.waitPod(t, ns, "hungry", "done", 60*time.Second, podDone)
	if s := terminated(p, "main"); s == nil || s.Reason != "OOMKilled" {
		t.Errorf("terminated %+v, want OOMKilled", s)
	}
}

// kubeletTerminationMessage: the termination message file, the log
// fallback, and ketch's stdout result each end up in
// state.terminated.message.
func kubeletTerminationMessage(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: messages}
spec:
  restartPolicy: Never
  containers:
  - name: file
    image: {{busybox}}
    command: [sh, -c, 'printf "written to the file" > /dev/termination-log']
  - name: custom
    image: {{busybox}}
    terminationMessagePath: /tmp/why
    command: [sh, -c, 'printf "custom path" > /tmp/why; exit 4']
  - name: fallback
    image: {{busybox}}
    terminationMessagePolicy: FallbackToLogsOnError
    command: [sh, -c, 'echo last words; exit 1']
---
apiVersion: v1
kind: Pod
metadata:
  name: result
  annotations: {ketch.dev/result: stdout}
spec:
  restartPolicy: Never
  containers:
  - {name: step, image: "{{busybox}}", command: [sh, -c, 'echo rows=42']}
`)
	p := c.waitPod(t, ns, "messages", "done", 60*time.Second, podDone)
	for name, want := range map[string]string{"file": "written to the file", "custom": "custom path", "fallback": "last words\n"} {
		if s := terminated(p, name); s == nil || s.Message != want {
			t.Errorf("%s: terminated %+v, want message %q", name, s, want)
		}
	}
	p = c.waitPod(t, ns, "result", "done", 60*time.Second, podDone)
	if s := terminated(p, "step"); s == nil || s.Message != "rows=42" || s.ExitCode != 0 {
		t.Errorf("result: terminated %+v, want message rows=42", s)
	}
}

// kubeletLifecycleHooks: postStart runs once the container started, preStop
// before it is stopped.
func kubeletLifecycleHooks(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	host := t.TempDir()
	c.applyPods(t, ns, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: hooked}
spec:
  terminationGracePeriodSeconds: 10
  volumes: [{name: host, hostPath: {path: %s, type: Directory}}]
  containers:
  - name: main
    image: {{busybox}}
    command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 0.1; done']
    volumeMounts: [{name: host, mountPath: /host}]
    lifecycle:
      postStart: {exec: {command: [sh, -c, 'echo post-start > /host/post']}}
      preStop: {exec: {command: [sh, -c, 'echo pre-stop > /host/pre']}}
`, host))
	c.waitPod(t, ns, "hooked", "running", 60*time.Second, podReady)
	if got := readFile(t, filepath.Join(host, "post")); got != "post-start\n" {
		t.Errorf("postStart wrote %q", got)
	}
	c.mustKubectl(t, "", "delete", "pod", "-n", ns, "hooked", "--wait=true")
	if b, err := os.ReadFile(filepath.Join(host, "pre")); err != nil || string(b) != "pre-stop\n" {
		t.Errorf("preStop: %q %v", b, err)
	}
}

// kubeletEphemeralContainer: `kubectl debug --target` adds a container to a
// running pod that sees the target container's processes.
func kubeletEphemeralContainer(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: debugged}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: "{{busybox}}", command: [sleep, "3603"]}]
`)
	c.waitPod(t, ns, "debugged", "running", 60*time.Second, podReady)
	c.mustKubectl(t, "", "debug", "-n", ns, "debugged", "--image", busybox, "--target", "main", "--container", "debugger",
		"--", "sh", "-c", "ps -o args; exec sleep 3600")
	c.waitPod(t, ns, "debugged", "the ephemeral container running", 60*time.Second, func(p *corev1.Pod) bool {
		for _, s := range p.Status.EphemeralContainerStatuses {
			if s.Name == "debugger" && s.State.Running != nil {
				return true
			}
		}
		return false
	})
	waitFor(t, 10*time.Second, "the debugger seeing the target's process", func() bool {
		out, _ := c.kubectl("", "logs", "-n", ns, "debugged", "-c", "debugger")
		return strings.Contains(out, "sleep 3603")
	})
}

// kubeletPrivileged: a privileged container has the host's devices, every
// capability root has, and can mount.
func kubeletPrivileged(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: privileged}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {{busybox}}
    command: [sleep, "3600"]
    securityContext: {privileged: true}
`)
	c.waitPod(t, ns, "privileged", "running", 60*time.Second, podReady)
	hostStatus := readFile(t, "/proc/self/status")
	if got, want := statusField(c.exec(t, ns, "privileged", "main", "cat", "/proc/self/status"), "CapEff"), statusField(hostStatus, "CapEff"); got != want {
		t.Errorf("CapEff %s, the host root's %s", got, want)
	}
	c.exec(t, ns, "privileged", "main", "sh", "-c", "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && umount /mnt/t")
	if _, err := os.Stat("/dev/kmsg"); err == nil {
		c.exec(t, ns, "privileged", "main", "test", "-c", "/dev/kmsg")
	}
}

// kubeletRuntimeClass: a RuntimeClass naming one of ketch's handlers runs
// its pods; one naming a handler ketch lacks fails them, saying which.
func kubeletRuntimeClass(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	rc := strings.ReplaceAll(ns, "testkubelet-parallel-", "")
	c.applyPods(t, ns, fmt.Sprintf(`
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: %[1]s-ketch}
handler: ketch
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: %[1]s-missing}
handler: missing-handler
---
apiVersion: v1
kind: Pod
metadata: {name: classy}
spec:
  runtimeClassName: %[1]s-ketch
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: "{{busybox}}", command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: classless}
spec:
  runtimeClassName: %[1]s-missing
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: "{{busybox}}", command: [sleep, "3600"]}]
`, rc))
	defer c.kubectl("", "delete", "runtimeclass", rc+"-ketch", rc+"-missing")
	c.waitPod(t, ns, "classy", "running", 60*time.Second, podReady)
	if s := c.runtimeSandboxes(t, ns, "classy"); len(s) != 1 || s[0].RuntimeHandler != "ketch" {
		t.Errorf("sandbox %v, want runtime handler ketch", s)
	}
	waitFor(t, 60*time.Second, "the pod of a missing handler failing with its name", func() bool {
		return strings.Contains(strings.Join(c.events(t, ns, "classless"), "\n"), "missing-handler")
	})
}

// kubeletStopSignal: a container's lifecycle.stopSignal (KEP-4960) is what
// stops it, not the image's TERM, and the pod status reports it.
func kubeletStopSignal(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	host := t.TempDir()
	c.applyPods(t, ns, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: signalled}
spec:
  os: {name: linux}
  terminationGracePeriodSeconds: 30
  volumes: [{name: host, hostPath: {path: %s, type: Directory}}]
  containers:
  - name: main
    image: {{busybox}}
    command: [sh, -c, 'trap "echo got USR1 > /host/sig; exit 0" USR1; trap "echo got TERM > /host/sig; exit 0" TERM; while true; do sleep 0.1; done']
    volumeMounts: [{name: host, mountPath: /host}]
    lifecycle: {stopSignal: SIGUSR1}
`, host))
	p := c.waitPod(t, ns, "signalled", "running", 60*time.Second, podReady)
	if s := ctrStatus(p, "main"); s.StopSignal == nil || *s.StopSignal != corev1.SIGUSR1 {
		t.Errorf("status stopSignal %v, want SIGUSR1", s.StopSignal)
	}
	c.mustKubectl(t, "", "delete", "pod", "-n", ns, "signalled", "--wait=true")
	if got := readFile(t, filepath.Join(host, "sig")); got != "got USR1\n" {
		t.Errorf("the program got %q", got)
	}
}

// kubeletPodResize: an in-place resize of pod-level resources reaches
// ketch (UpdatePodSandboxResources) and completes, no container restarted.
func kubeletPodResize(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: podlevel}
spec:
  terminationGracePeriodSeconds: 1
  resources:
    requests: {cpu: 200m, memory: 64Mi}
    limits: {cpu: 200m, memory: 64Mi}
  containers: [{name: main, image: "{{busybox}}", command: [sleep, "3600"]}]
`)
	before := c.waitPod(t, ns, "podlevel", "running", 60*time.Second, podReady)
	c.mustKubectl(t, "", "patch", "pod", "-n", ns, "podlevel", "--subresource", "resize", "--patch",
		`{"spec":{"resources":{"requests":{"cpu":"400m","memory":"96Mi"},"limits":{"cpu":"400m","memory":"96Mi"}}}}`)
	sb := c.runtimeSandboxes(t, ns, "podlevel")
	if len(sb) != 1 {
		t.Fatalf("sandboxes %v", sb)
	}
	waitFor(t, 60*time.Second, "ketch holding the pod's new resources", func() bool {
		resp, err := c.d.rt.PodSandboxStatus(ctxT(t, 10*time.Second), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb[0].Id, Verbose: true})
		if err != nil {
			return false
		}
		var info struct {
			Resources *runtimeapi.LinuxContainerResources `json:"resources"`
		}
		_ = json.Unmarshal([]byte(resp.Info["info"]), &info)
		return info.Resources.GetCpuQuota() == 40000 && info.Resources.GetMemoryLimitInBytes() == 96<<20
	})
	p := c.waitPod(t, ns, "podlevel", "resize done", 60*time.Second, func(p *corev1.Pod) bool {
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodResizeInProgress || cond.Type == corev1.PodResizePending {
				return false
			}
		}
		return true
	})
	if s := ctrStatus(p, "main"); s.RestartCount != 0 || s.ContainerID != ctrStatus(before, "main").ContainerID {
		t.Errorf("the resize restarted the container: %+v", s)
	}
	checkPodCPUQuota(t, p, "40000")
}

// kubeletImageVolume: an image volume (KEP-4639, GA in 1.36) is pulled by
// kubelet and mounted by ketch: the image's files, whole and by a subPath,
// read-only.
func kubeletImageVolume(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: imagevol}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  volumes: [{name: models, image: {reference: "{{multilayer}}", pullPolicy: IfNotPresent}}]
  containers:
  - name: main
    image: {{busybox}}
    command: [sh, -c, 'ls /models/data/layer-5.bin /sub/layer-1.bin && if touch /models/x; then echo WRITABLE; fi']
    volumeMounts: [{name: models, mountPath: /models}, {name: models, mountPath: /sub, subPath: data}]
`)
	p := c.waitPod(t, ns, "imagevol", "ended", 90*time.Second, func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	})
	logs := c.logs(t, ns, "imagevol", "main")
	if p.Status.Phase != corev1.PodSucceeded || strings.Contains(logs, "WRITABLE") || !strings.Contains(logs, "/sub/layer-1.bin") {
		t.Errorf("pod %s; its output:\n%s", p.Status.Phase, logs)
	}
}

// checkPodCPUQuota: the CPU quota of pod p's cgroup, kubelet's, which
// holds its containers' cgroups (under its QoS class's, if any), is want.
func checkPodCPUQuota(t *testing.T, p *corev1.Pod, want string) {
	t.Helper()
	quota, _ := filepath.Glob(fmt.Sprintf("/sys/fs/cgroup/cpu/kubepods*/pod%s/cpu.cfs_quota_us", p.UID))
	quota2, _ := filepath.Glob(fmt.Sprintf("/sys/fs/cgroup/cpu/kubepods*/*/pod%s/cpu.cfs_quota_us", p.UID))
	if files := append(quota, quota2...); len(files) != 1 || strings.TrimSpace(readFile(t, files[0])) != want {
		t.Errorf("the pod cgroup's CPU quota after the resize: %v", files)
	}
}
