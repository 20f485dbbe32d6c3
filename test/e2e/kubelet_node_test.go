//go:build e2e

package e2e

// kubelet cases about the node: host namespaces and ports, DNS, sysctls,
// security contexts, streaming through the API server, images and logs,
// restarts of kubelet and ketchd, and what deleted pods leave behind.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// kubeletHostNamespaces: hostNetwork, hostPID and hostIPC pods share the
// node's namespaces; a plain pod shares none.
func kubeletHostNamespaces(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: hostns}
spec:
  hostNetwork: true
  hostPID: true
  hostIPC: true
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: "{{busybox}}", command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: podns}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: "{{busybox}}", command: [sleep, "3600"]}]
`)
	p := c.waitPod(t, ns, "hostns", "running", 60*time.Second, podReady)
	c.waitPod(t, ns, "podns", "running", 60*time.Second, podReady)
	for _, kind := range []string{"net", "pid", "ipc"} {
		host, err := os.Readlink("/proc/self/ns/" + kind)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(c.exec(t, ns, "hostns", "main", "readlink", "/proc/self/ns/"+kind)); got != host {
			t.Errorf("hostns pod's %s namespace %s, the node's %s", kind, got, host)
		}
		if got := strings.TrimSpace(c.exec(t, ns, "podns", "main", "readlink", "/proc/self/ns/"+kind)); got == host {
			t.Errorf("a plain pod is in the node's %s namespace", kind)
		}
	}
	hostname, _ := os.Hostname()
	if got := strings.TrimSpace(c.exec(t, ns, "hostns", "main", "hostname")); got != hostname {
		t.Errorf("hostNetwork pod's hostname %q, the node's %q", got, hostname)
	}
	if p.Status.PodIP == "" || p.Status.PodIP != p.Status.HostIP {
		t.Errorf("hostNetwork pod IP %q, host IP %q", p.Status.PodIP, p.Status.HostIP)
	}
}

// kubeletHostPort: a container port published on a host port answers on
// the node.
func kubeletHostPort(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: published}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {{nginx}}
    ports: [{containerPort: 80, hostPort: 18089, hostIP: 127.0.0.1}]
    readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 1}
`)
	p := c.waitPod(t, ns, "published", "ready", 60*time.Second, podReady)
	if body := httpGet(t, "http://"+p.Status.PodIP+":80/"); !strings.Contains(body, "nginx") {
		t.Errorf("pod IP answer %q", body)
	}
	if body := httpGet(t, "http://127.0.0.1:18089/"); !strings.Contains(body, "nginx") {
		t.Errorf("host port answer %q", body)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	cl := http.Client{Timeout: 5 * time.Second}
	var last error
	for range 20 {
		resp, err := cl.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return string(b)
		}
		last = err
		time.Sleep(250 * time.Millisecond)
	}
	t.Errorf("GET %s: %v", url, last)
	return ""
}

// kubeletDNSAndSysctls: the pod's DNS config becomes its resolv.conf, and
// its sysctls are set in its namespaces.
func kubeletDNSAndSysctls(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: tuned}
spec:
  terminationGracePeriodSeconds: 1
  hostname: custom-host
  dnsPolicy: None
  dnsConfig:
    nameservers: [10.250.0.10]
    searches: [svc.example.test]
    options: [{name: ndots, value: "2"}]
  securityContext:
    sysctls:
    - {name: net.ipv4.ip_local_port_range, value: "40000 50000"}
    - {name: kernel.shm_rmid_forced, value: "1"}
  containers: [{name: main, image: "{{busybox}}", command: [sleep, "3600"]}]
`)
	c.waitPod(t, ns, "tuned", "running", 60*time.Second, podReady)
	resolv := c.exec(t, ns, "tuned", "main", "cat", "/etc/resolv.conf")
	for _, want := range []string{"nameserver 10.250.0.10", "search svc.example.test", "options ndots:2"} {
		if !strings.Contains(resolv, want) {
			t.Errorf("resolv.conf lacks %q:\n%s", want, resolv)
		}
	}
	if got := strings.Fields(c.exec(t, ns, "tuned", "main", "cat", "/proc/sys/net/ipv4/ip_local_port_range")); !slices.Equal(got, []string{"40000", "50000"}) {
		t.Errorf("ip_local_port_range %v", got)
	}
	if got := strings.TrimSpace(c.exec(t, ns, "tuned", "main", "cat", "/proc/sys/kernel/shm_rmid_forced")); got != "1" {
		t.Errorf("shm_rmid_forced %s", got)
	}
	if got := strings.TrimSpace(c.exec(t, ns, "tuned", "main", "hostname")); got != "custom-host" {
		t.Errorf("hostname %q", got)
	}
}

// kubeletSecurityContext: user, groups, fsGroup, capabilities, read-only
// root and the runtime's default seccomp profile.
func kubeletSecurityContext(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: locked}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000, seccompProfile: {type: RuntimeDefault}}
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - name: main
    image: {{busybox}}
    command: [sleep, "3600"]
    volumeMounts: [{name: data, mountPath: /data}]
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
  - name: root
    image: {{busybox}}
    command: [sleep, "3600"]
    securityContext:
      runAsUser: 0
      capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
`)
	p := c.waitPod(t, ns, "locked", "running", 60*time.Second, podReady)
	id := c.exec(t, ns, "locked", "main", "id")
	if !strings.Contains(id, "uid=1000") || !strings.Contains(id, "gid=3000") || !strings.Contains(id, "2000") {
		t.Errorf("id: %s", id)
	}
	if got := strings.Fields(c.exec(t, ns, "locked", "main", "stat", "-c", "%g %a", "/data")); len(got) != 2 || got[0] != "2000" {
		t.Errorf("fsGroup volume group/mode %v, want group 2000", got)
	}
	c.exec(t, ns, "locked", "main", "touch", "/data/ok")
	if out, err := c.kubectl("", "exec", "-n", ns, "locked", "-c", "main", "--", "touch", "/rootfs-write"); err == nil {
		t.Errorf("a write to the read-only root succeeded: %s", out)
	}
	// A non-root user keeps added capabilities only in its bounding set
	// (Kubernetes gives no ambient ones); root has them in effect.
	for ctr, want := range map[string]map[string]string{
		"main": {"Seccomp": "2", "NoNewPrivs": "1", "CapEff": "0000000000000000", "CapBnd": "0000000000000400"},
		"root": {"Seccomp": "2", "CapEff": "0000000000000400", "CapBnd": "0000000000000400"},
	} {
		status := c.exec(t, ns, "locked", ctr, "cat", "/proc/self/status")
		for key, v := range want {
			if got := statusField(status, key); got != v {
				t.Errorf("%s: %s %s, want %s", ctr, key, got, v)
			}
		}
	}
	if u := ctrStatus(p, "main").User; u == nil || u.Linux == nil || u.Linux.UID != 1000 || u.Linux.GID != 3000 || !slices.Contains(u.Linux.SupplementalGroups, 2000) {
		t.Errorf("status.containerStatuses.user %+v", u)
	}
}

func statusField(status, key string) string {
	s := bufio.NewScanner(strings.NewReader(status))
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// kubeletUserNamespace: a hostUsers: false pod runs as root in a user
// namespace mapped to unprivileged IDs of the node.
func kubeletUserNamespace(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: userns}
spec:
  hostUsers: false
  terminationGracePeriodSeconds: 1
  volumes: [{name: conf, configMap: {name: kube-root-ca.crt}}]
  containers:
  - name: main
    image: {{busybox}}
    command: [sh, -c, 'echo hi > /tmp/x; exec sleep 3600']
    volumeMounts: [{name: conf, mountPath: /conf}]
`)
	c.waitPod(t, ns, "userns", "running", 60*time.Second, podReady)
	m := strings.Fields(c.exec(t, ns, "userns", "main", "cat", "/proc/self/uid_map"))
	if len(m) != 3 || m[0] != "0" || m[1] == "0" || m[2] != "65536" {
		t.Errorf("uid_map %v, want 0 -> an unprivileged range of 65536", m)
	}
	if got := strings.TrimSpace(c.exec(t, ns, "userns", "main", "id", "-u")); got != "0" {
		t.Errorf("uid in the pod %s, want 0", got)
	}
	if got := c.exec(t, ns, "userns", "main", "head", "-c", "27", "/conf/ca.crt"); got != "-----BEGIN CERTIFICATE-----" {
		t.Errorf("configMap in a user namespace: %q", got)
	}
}

// kubeletStreaming: kubectl exec (with a terminal too), attach,
// port-forward and cp, all through the API server and kubelet.
func kubeletStreaming(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: streams}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: web, image: "{{nginx}}", readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 1}}
  - name: echo
    image: {{busybox}}
    stdin: true
    command: [sh, -c, 'while read line; do echo "got $line"; done']
`)
	c.waitPod(t, ns, "streams", "ready", 60*time.Second, podReady)
	if out := c.exec(t, ns, "streams", "echo", "sh", "-c", "echo out; echo err >&2; exit 0"); out != "out\n" {
		t.Errorf("exec stdout %q", out)
	}
	if _, err := c.kubectl("", "exec", "-n", ns, "streams", "-c", "echo", "--", "sh", "-c", "exit 3"); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("exec exit code: %v", err)
	}
	if out := c.mustKubectl(t, "from stdin\n", "exec", "-i", "-n", ns, "streams", "-c", "echo", "--", "cat"); out != "from stdin\n" {
		t.Errorf("exec -i %q", out)
	}
	// -t needs a terminal on kubectl's side: script(1) gives it one.
	kubectl := filepath.Join(kubeBin, "kubectl")
	tty := exec.Command("script", "-qec", fmt.Sprintf("%s --kubeconfig %s exec -it -n %s streams -c echo -- sh -c 'tty; stty size'", kubectl, c.kubeconfig, ns), "/dev/null")
	tty.Env = append(os.Environ(), "COLUMNS=91", "LINES=33")
	if out, err := tty.CombinedOutput(); err != nil || !strings.Contains(string(out), "/dev/pts/") {
		t.Errorf("exec -it: %v\n%s", err, out)
	}
	// attach: what is written to the container's stdin comes back on its stdout.
	attach := exec.Command(kubectl, "--kubeconfig", c.kubeconfig, "attach", "-i", "-n", ns, "streams", "-c", "echo")
	stdin, _ := attach.StdinPipe()
	var out bytes.Buffer
	attach.Stdout = &out
	if err := attach.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "got hello") && time.Now().Before(deadline) {
		fmt.Fprintln(stdin, "hello")
		time.Sleep(500 * time.Millisecond)
	}
	stdin.Close()
	_ = attach.Process.Kill()
	_ = attach.Wait()
	if !strings.Contains(c.logs(t, ns, "streams", "echo"), "got hello") {
		t.Errorf("attach: the container did not get its stdin (attach output %q)", out.String())
	}
	// port-forward to a free local port, which kubectl prints.
	pf := exec.Command(kubectl, "--kubeconfig", c.kubeconfig, "port-forward", "-n", ns, "pod/streams", ":80")
	pfOut, _ := pf.StdoutPipe()
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pf.Process.Kill(); _ = pf.Wait() }()
	line, _ := bufio.NewReader(pfOut).ReadString('\n')
	m := regexp.MustCompile(`127\.0\.0\.1:(\d+) -> 80`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("port-forward printed %q", line)
	}
	if body := httpGet(t, "http://127.0.0.1:"+m[1]+"/"); !strings.Contains(body, "nginx") {
		t.Errorf("port-forward answer %q", body)
	}
	// cp both ways.
	src := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(src, []byte("copied in\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.mustKubectl(t, "", "cp", src, ns+"/streams:/tmp/in", "-c", "echo")
	if got := c.exec(t, ns, "streams", "echo", "cat", "/tmp/in"); got != "copied in\n" {
		t.Errorf("cp into the container: %q", got)
	}
	back := filepath.Join(t.TempDir(), "back")
	c.mustKubectl(t, "", "cp", ns+"/streams:/tmp/in", back, "-c", "echo")
	if b, err := os.ReadFile(back); err != nil || string(b) != "copied in\n" {
		t.Errorf("cp out of the container: %q %v", b, err)
	}
}

// events are the reasons and messages of the events about pod ns/name.
func (c *cluster) events(t *testing.T, ns, name string) []string {
	t.Helper()
	list, err := c.kube.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		out = append(out, e.Reason+": "+e.Message)
	}
	return out
}

// kubeletPullPolicies: Always pulls, IfNotPresent does not when the image
// is there, Never runs what is there and refuses what is not.
func kubeletPullPolicies(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	img := registry + "/k8s-staging-cri-tools/test-image-tags:1"
	absent := registry + "/k8s-staging-cri-tools/test-image-latest:latest"
	c.applyPods(t, ns, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: always}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: %[1]s, imagePullPolicy: Always, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: never-absent}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: %[2]s, imagePullPolicy: Never, command: [sleep, "3600"]}]
`, img, absent))
	c.waitPod(t, ns, "always", "running", 60*time.Second, podReady)
	if ev := strings.Join(c.events(t, ns, "always"), "\n"); !strings.Contains(ev, "Pulled: ") || !strings.Contains(ev, "Successfully pulled") {
		t.Errorf("Always: events %s", ev)
	}
	c.waitPod(t, ns, "never-absent", "ErrImageNeverPull", 60*time.Second, func(p *corev1.Pod) bool {
		s := ctrStatus(p, "main")
		return s != nil && s.State.Waiting != nil && s.State.Waiting.Reason == "ErrImageNeverPull"
	})
	c.applyPods(t, ns, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: ifnotpresent}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: %[1]s, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: never-present}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: %[1]s, imagePullPolicy: Never, command: [sleep, "3600"]}]
`, img))
	c.waitPod(t, ns, "ifnotpresent", "running", 60*time.Second, podReady)
	c.waitPod(t, ns, "never-present", "running", 60*time.Second, podReady)
	if ev := strings.Join(c.events(t, ns, "ifnotpresent"), "\n"); !strings.Contains(ev, "already present on machine") {
		t.Errorf("IfNotPresent pulled an image that was there: %s", ev)
	}
}

// kubeletPullSecret: an imagePullSecret authenticates against a registry
// that wants credentials; without it the pull is refused.
func kubeletPullSecret(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	auth := base64.StdEncoding.EncodeToString([]byte(authUser + ":" + authPassword))
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, authRegistry, auth)
	img := authRegistry + "/k8s-staging-cri-tools/test-image-3:latest"
	c.applyPods(t, ns, fmt.Sprintf(`
apiVersion: v1
kind: Secret
metadata: {name: regcred}
type: kubernetes.io/dockerconfigjson
data: {.dockerconfigjson: %s}
---
apiVersion: v1
kind: Pod
metadata: {name: with-secret}
spec:
  terminationGracePeriodSeconds: 1
  imagePullSecrets: [{name: regcred}]
  containers: [{name: main, image: %s, imagePullPolicy: Always, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: without-secret}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: %[2]s, imagePullPolicy: Always, command: [sleep, "3600"]}]
`, base64.StdEncoding.EncodeToString([]byte(cfg)), img))
	c.waitPod(t, ns, "with-secret", "running", 60*time.Second, podReady)
	p := c.waitPod(t, ns, "without-secret", "refused", 60*time.Second, func(p *corev1.Pod) bool {
		s := ctrStatus(p, "main")
		return s != nil && s.State.Waiting != nil && (s.State.Waiting.Reason == "ErrImagePull" || s.State.Waiting.Reason == "ImagePullBackOff")
	})
	if ev := strings.Join(c.events(t, ns, "without-secret"), "\n"); !strings.Contains(strings.ToLower(ev), "unauthorized") && !strings.Contains(ev, "401") && !strings.Contains(strings.ToLower(ev), "authenticat") {
		t.Errorf("the refusal does not say why: %s (%+v)", ev, ctrStatus(p, "main").State.Waiting)
	}
}

// kubeletLogRotation: kubelet rotates a chatty container's log (rename,
// ReopenContainerLog, compress) and no line is lost or doubled in the files
// it keeps.
func kubeletLogRotation(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: chatty}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: {{busybox}}
    # ~8 KiB/s for 20 s: several rotations at containerLogMaxSize 16Ki every 3 s.
    command: [sh, -c, 'i=1; while [ $i -le 2000 ]; do echo "line $i ......................................................................"; i=$((i+1)); if [ $((i % 100)) -eq 0 ]; then sleep 1; fi; done; sleep 4']
`)
	p := c.waitPod(t, ns, "chatty", "done", 120*time.Second, podDone)
	dir := filepath.Join(c.podLogs, fmt.Sprintf("%s_chatty_%s", ns, p.UID), "main")
	files, _ := filepath.Glob(filepath.Join(dir, "0.log*"))
	if len(files) < 2 {
		t.Fatalf("no rotation happened: %v", files)
	}
	// Oldest first: rotated files are named by time; the current one last.
	slices.Sort(files)
	files = append(files[1:], files[0])
	var numbers []int
	for _, f := range files {
		numbers = append(numbers, logLineNumbers(t, f)...)
	}
	if len(numbers) == 0 || numbers[len(numbers)-1] != 2000 {
		t.Fatalf("the kept logs end at %v, want line 2000", numbers[max(0, len(numbers)-1):])
	}
	for i := 1; i < len(numbers); i++ {
		if numbers[i] != numbers[i-1]+1 {
			t.Fatalf("line %d follows line %d in the kept logs %v", numbers[i], numbers[i-1], files)
		}
	}
	t.Logf("%d files kept, lines %d..2000 in order", len(files), numbers[0])
}

// logLineNumbers reads a CRI log file (gzipped when rotated) and returns
// the numbers of its "line N" lines.
func logLineNumbers(t *testing.T, path string) []int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		if r, err = gzip.NewReader(f); err != nil {
			t.Fatal(err)
		}
	}
	var out []int
	s := bufio.NewScanner(r)
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) >= 5 && f[1] == "stdout" && f[2] == "F" && f[3] == "line" {
			n, err := strconv.Atoi(f[4])
			if err != nil {
				t.Fatalf("%s: %q", path, s.Text())
			}
			out = append(out, n)
		}
	}
	return out
}

// kubeletImageGC: kubelet's image garbage collection removes an image no
// container uses (imageMaximumGCAge) and keeps those in use.
func kubeletImageGC(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	unused := registry + "/k8s-staging-cri-tools/test-image-1:latest"
	c.applyPods(t, ns, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: once}
spec:
  restartPolicy: Never
  containers: [{name: main, image: %s, command: ["true"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: keeper}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: "{{busybox}}", command: [sleep, "3600"]}]
`, unused))
	c.waitPod(t, ns, "keeper", "running", 60*time.Second, podReady)
	c.waitPod(t, ns, "once", "done", 60*time.Second, podDone)
	c.mustKubectl(t, "", "delete", "pod", "-n", ns, "once")
	present := func(ref string) bool {
		resp, err := c.d.img.ImageStatus(ctxT(t, 10*time.Second), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Image != nil
	}
	// kubelet collects every 5 minutes from its start; an image goes once
	// unused for imageMaximumGCAge (1m).
	waitFor(t, 8*time.Minute, "kubelet's image GC removing "+unused, func() bool { return !present(unused) })
	if !present(busybox) {
		t.Error("kubelet's image GC removed busybox, which a running pod uses")
	}
}

// podContainers is, for each container of pod ns/name, its ID and restart
// count, as kubelet reports them.
func (c *cluster) podContainers(t *testing.T, ns, name string) map[string]string {
	t.Helper()
	p := c.getPod(t, ns, name)
	out := map[string]string{}
	for _, s := range p.Status.ContainerStatuses {
		out[s.Name] = fmt.Sprintf("%s restarts=%d", s.ContainerID, s.RestartCount)
	}
	return out
}

// steady makes a pod that must run through a restart untouched.
func (c *cluster) steady(t *testing.T) (string, map[string]string) {
	t.Helper()
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: steady}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: a, image: "{{busybox}}", command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.5; done']}
  - {name: web, image: "{{nginx}}", readinessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 1}}
`)
	c.waitPod(t, ns, "steady", "ready", 60*time.Second, podReady)
	return ns, c.podContainers(t, ns, "steady")
}

// checkSteady: after a restart the pod is ready with the same containers,
// none restarted, and its log still grows.
func (c *cluster) checkSteady(t *testing.T, ns string, before map[string]string) {
	t.Helper()
	c.waitPod(t, ns, "steady", "ready after the restart", 60*time.Second, podReady)
	// Long enough for kubelet to resync every pod and act on what it sees.
	time.Sleep(15 * time.Second)
	c.waitPod(t, ns, "steady", "ready", 10*time.Second, podReady)
	if after := c.podContainers(t, ns, "steady"); !mapsEqual(before, after) {
		t.Errorf("containers before %v, after %v", before, after)
	}
	n := func() int { return strings.Count(c.logs(t, ns, "steady", "a"), "tick") }
	k := n()
	waitFor(t, 10*time.Second, "the log growing", func() bool { return n() > k })
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func (c *cluster) nodeReady(t *testing.T) {
	t.Helper()
	waitFor(t, 60*time.Second, "node Ready", func() bool {
		n, err := c.kube.CoreV1().Nodes().Get(context.Background(), testNode, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue
			}
		}
		return false
	})
}

// restartKubelet stops the kubelet and starts it again with feature gates
// (the cluster's when empty).
func (c *cluster) restartKubelet(t *testing.T, gates string) {
	t.Helper()
	if out, err := exec.Command(clusterSh, "kubelet", c.dir, "stop").CombinedOutput(); err != nil {
		t.Fatalf("kubelet stop: %v\n%s", err, out)
	}
	start := exec.Command(clusterSh, "kubelet", c.dir, "start")
	if gates != "" {
		start.Env = append(os.Environ(), "FEATURE_GATES="+gates)
	}
	if out, err := start.CombinedOutput(); err != nil {
		t.Fatalf("kubelet start: %v\n%s", err, out)
	}
	c.nodeReady(t)
}

// kubeletRestart: kubelet restarted under running pods sees them as they
// were and restarts none.
func kubeletRestart(t *testing.T, c *cluster) {
	ns, before := c.steady(t)
	c.restartKubelet(t, "")
	c.checkSteady(t, ns, before)
}

// ketchdRestart: ketchd stopped (or killed -9) and started again under a
// running kubelet and pods: kubelet sees no change.
func ketchdRestart(t *testing.T, c *cluster, kill bool) {
	ns, before := c.steady(t)
	if kill {
		c.d.kill(t)
	} else {
		c.d.stop(t)
	}
	c.d = restart(c.t, c.d)
	c.checkSteady(t, ns, before)
}

// kubeletEventedPLEG: kubelet with the EventedPLEG gate subscribes to
// ketch's GetContainerEvents and learns of a container's exit through it.
func kubeletEventedPLEG(t *testing.T, c *cluster) {
	c.restartKubelet(t, kubeletGates+",EventedPLEG=true")
	defer c.restartKubelet(t, "")
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: evented}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: "{{busybox}}", command: [sh, -c, 'sleep 2; exit 1']}]
`)
	c.waitPod(t, ns, "evented", "restarted", 90*time.Second, func(p *corev1.Pod) bool {
		s := ctrStatus(p, "main")
		return s != nil && s.RestartCount >= 1
	})
	metrics := c.kubeletGet(t, "/metrics")
	if v := metricValue(metrics, "kubelet_evented_pleg_connection_success_count"); v < 1 {
		t.Errorf("kubelet's evented PLEG never connected to GetContainerEvents (success count %v)", v)
	}
	if v := metricValue(metrics, "kubelet_evented_pleg_connection_error_count"); v != 0 {
		t.Errorf("kubelet's evented PLEG stream failed %v times", v)
	}
	if b, _ := os.ReadFile(filepath.Join(c.dir, "log", "kubelet.log")); bytes.Contains(b, []byte("disabling container-termination fast path")) {
		t.Error("kubelet gave up on ketch's container events")
	}
}

// kubeletListStreaming: kubelet with the CRIListStreaming gate (KEP-5825)
// lists pods and containers through ketch's Stream RPCs, and runs pods as
// before.
func kubeletListStreaming(t *testing.T, c *cluster) {
	c.restartKubelet(t, kubeletGates+",CRIListStreaming=true")
	defer c.restartKubelet(t, "")
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: streamed}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: "{{busybox}}", command: [sleep, "3600"]}]
`)
	c.waitPod(t, ns, "streamed", "running", 60*time.Second, podReady)
	log := c.d.log.String()
	for _, rpc := range []string{"StreamPodSandboxes", "StreamContainers"} {
		if !strings.Contains(log, "/runtime.v1.RuntimeService/"+rpc) {
			t.Errorf("kubelet never called %s", rpc)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(c.dir, "log", "kubelet.log")); bytes.Contains(b, []byte("not implemented, falling back")) {
		t.Error("kubelet fell back to the List RPCs")
	}
}

// kubeletStatsFromCRI: kubelet with the PodAndContainerStatsFromCRI gate
// takes every figure of /stats/summary and /metrics/cadvisor from ketch,
// none from cAdvisor: the pod's own cgroup, its containers, its network,
// and cAdvisor's container metrics by cAdvisor's names and labels.
func kubeletStatsFromCRI(t *testing.T, c *cluster) {
	c.restartKubelet(t, kubeletGates+",PodAndContainerStatsFromCRI=true")
	defer c.restartKubelet(t, "")
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: measured}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {{busybox}}
    # Direct IO reaches the disk, where the cgroup counts it by device.
    command: [sh, -c, 'dd if=/dev/zero of=/tmp/io bs=1M count=4 oflag=direct && dd if=/tmp/io of=/dev/null bs=1M iflag=direct && while true; do :; done']
    resources: {limits: {cpu: 200m, memory: 80Mi}}
`)
	c.waitPod(t, ns, "measured", "running", 60*time.Second, podReady)

	type usage struct {
		CPU struct {
			UsageNanoCores       *uint64 `json:"usageNanoCores"`
			UsageCoreNanoSeconds uint64  `json:"usageCoreNanoSeconds"`
		} `json:"cpu"`
		Memory struct {
			WorkingSetBytes uint64  `json:"workingSetBytes"`
			AvailableBytes  *uint64 `json:"availableBytes"`
		} `json:"memory"`
	}
	var pod struct {
		usage
		PodRef     struct{ Name, Namespace string } `json:"podRef"`
		Containers []struct {
			usage
			Name string `json:"name"`
		} `json:"containers"`
		Network *struct {
			Name    string `json:"name"`
			RxBytes uint64 `json:"rxBytes"`
		} `json:"network"`
	}
	waitFor(t, 90*time.Second, "the pod's and its container's usage in /stats/summary", func() bool {
		var summary struct {
			Pods []json.RawMessage `json:"pods"`
		}
		if err := json.Unmarshal([]byte(c.kubeletGet(t, "/stats/summary")), &summary); err != nil {
			t.Fatal(err)
		}
		for _, raw := range summary.Pods {
			if err := json.Unmarshal(raw, &pod); err != nil {
				t.Fatal(err)
			}
			if pod.PodRef.Namespace == ns && pod.PodRef.Name == "measured" {
				return len(pod.Containers) == 1 && pod.Containers[0].CPU.UsageNanoCores != nil && *pod.Containers[0].CPU.UsageNanoCores > 0 &&
					pod.CPU.UsageNanoCores != nil && *pod.CPU.UsageNanoCores > 0
			}
		}
		return false
	})
	ctr := pod.Containers[0]
	if ctr.Name != "main" || ctr.Memory.WorkingSetBytes == 0 || ctr.Memory.AvailableBytes == nil || *ctr.Memory.AvailableBytes > 80<<20 {
		t.Errorf("container stats %+v: want main's working set and what is left of its 80 MiB", ctr)
	}
	// The pod's cgroup holds its container: the pod uses at least as much.
	if pod.CPU.UsageCoreNanoSeconds < ctr.CPU.UsageCoreNanoSeconds || pod.Memory.WorkingSetBytes < ctr.Memory.WorkingSetBytes {
		t.Errorf("pod usage %+v below its container's %+v: not the pod's own cgroup", pod.usage, ctr.usage)
	}
	// 200m of CPU, measured over a few seconds: well under a whole core.
	if n := *pod.CPU.UsageNanoCores; n > 600e6 {
		t.Errorf("pod uses %d nanocores under a 200m limit", n)
	}
	if pod.Network == nil || pod.Network.Name != "eth0" {
		t.Errorf("pod network %+v, want eth0's counters", pod.Network)
	}

	// /metrics/cadvisor: every metric ketch describes, for this container
	// (and its pod's network, as cAdvisor's "POD"), by kubelet's hand.
	descs, err := c.d.rt.ListMetricDescriptors(ctxT(t, 10*time.Second), &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	text := c.kubeletGet(t, "/metrics/cadvisor")
	series := map[string][]string{} // metric name → this pod's series
	for _, l := range strings.Split(text, "\n") {
		name, rest, ok := strings.Cut(l, "{")
		if ok && !strings.HasPrefix(l, "#") && strings.Contains(rest, `namespace="`+ns+`"`) {
			series[name] = append(series[name], rest)
		}
	}
	_, err = os.Stat("/sys/fs/cgroup/cgroup.controllers")
	cgroupV2 := err == nil
	// A cgroup v1 kernel may keep no block IO counts at all: then even the
	// root blkio cgroup, which sees all of the node's IO, reports none.
	blkioCounted := true
	if !cgroupV2 {
		b, _ := os.ReadFile("/sys/fs/cgroup/blkio/blkio.throttle.io_service_bytes_recursive")
		if blkioCounted = strings.TrimSpace(string(b)) != "Total 0"; !blkioCounted {
			t.Log("block IO metrics not checked: this kernel's cgroup v1 blkio counts no IO (the root cgroup's blkio.throttle.io_service_bytes_recursive is \"Total 0\")")
		}
	}
	for _, d := range descs.Descriptors {
		if strings.HasPrefix(d.Name, "container_pressure_") && !cgroupV2 {
			continue // pressure is cgroup v2's
		}
		if !blkioCounted && (strings.HasPrefix(d.Name, "container_fs_reads") || strings.HasPrefix(d.Name, "container_fs_writes") || d.Name == "container_blkio_device_usage_total") {
			continue
		}
		who := `container="main"`
		if strings.HasPrefix(d.Name, "container_network_") {
			who = `container="POD"`
		}
		found := false
		for _, s := range series[d.Name] {
			found = found || strings.Contains(s, who) && strings.Contains(s, `pod="measured"`)
		}
		if !found {
			t.Errorf("/metrics/cadvisor has no %s for %s: %q", d.Name, who, series[d.Name])
		}
	}
	t.Logf("kubelet's /metrics/cadvisor: %d container_* names for the pod, of the %d ketch describes", len(series), len(descs.Descriptors))
	if len(descs.Descriptors) < 49 {
		t.Errorf("ketch describes %d metrics, fewer than containerd's 49", len(descs.Descriptors))
	}
	for name, want := range map[string]float64{
		"container_spec_memory_limit_bytes": 80 << 20, "container_spec_cpu_quota": 20000, "container_spec_cpu_period": 100000,
	} {
		s := series[name]
		if len(s) != 1 {
			t.Errorf("%s: %q, want one series", name, s)
			continue
		}
		f := strings.Fields(s[0][strings.LastIndex(s[0], "}")+1:])
		if v, err := strconv.ParseFloat(f[0], 64); err != nil || v != want {
			t.Errorf("%s = %s, want %v", name, f[0], want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(c.dir, "log", "kubelet.log")); bytes.Contains(b, []byte("Failed to get pod metrics")) || bytes.Contains(b, []byte("Error getting CRI prometheus metric")) {
		t.Error("kubelet failed to read ketch's metrics; see kubelet.log")
	}
}

// metricValue is the value of an unlabelled metric in Prometheus text, -1
// when absent.
func metricValue(text, name string) float64 {
	for _, l := range strings.Split(text, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	return -1
}

// kubeletStandalone: a kubelet without an API server runs the static pods
// of its manifest directory on ketch, and stops them when their manifest goes.
func kubeletStandalone(t *testing.T, c *cluster) {
	if out, err := exec.Command(clusterSh, "kubelet", c.dir, "stop").CombinedOutput(); err != nil {
		t.Fatalf("kubelet stop: %v\n%s", err, out)
	}
	start := exec.Command(clusterSh, "kubelet", c.dir, "start")
	start.Env = append(os.Environ(), "KUBELET_STANDALONE=1")
	if out, err := start.CombinedOutput(); err != nil {
		t.Fatalf("standalone kubelet start: %v\n%s", err, out)
	}
	defer c.restartKubelet(t, "")
	manifest := filepath.Join(c.dir, "manifests", "alone.yaml")
	if err := os.WriteFile(manifest, []byte(manifestImages.Replace(`
apiVersion: v1
kind: Pod
metadata: {name: alone, namespace: standalone, uid: standalone-uid}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - {name: main, image: "{{busybox}}", command: [sh, -c, 'echo no API server here; exec sleep 3600']}
`)), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(manifest)
	var log string
	waitFor(t, 60*time.Second, "the static pod's container logging", func() bool {
		logs, _ := filepath.Glob(filepath.Join(c.podLogs, "standalone_alone-"+testNode+"_*", "main", "0.log"))
		if len(logs) != 1 {
			return false
		}
		b, _ := os.ReadFile(logs[0])
		log = string(b)
		return strings.Contains(log, " stdout F no API server here\n")
	})
	if s := c.runtimeSandboxes(t, "standalone", "alone-"+testNode); len(s) != 1 || s[0].State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("ketch's sandboxes of the static pod: %v", s)
	}
	os.Remove(manifest)
	c.waitSandboxStopped(t, "standalone", "alone-"+testNode)
}

// kubeletNothingLeft: once every pod is deleted, kubelet's sandbox GC
// removes them from ketch and nothing of them is left on the host.
func kubeletNothingLeft(t *testing.T, c *cluster) {
	list, err := c.kube.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) > 0 {
		var names []string
		for _, p := range list.Items {
			names = append(names, p.Namespace+"/"+p.Name)
		}
		t.Errorf("pods left after every case deleted its namespace: %v", names)
	}
	waitFor(t, 3*time.Minute, "kubelet's GC removing every sandbox from ketch", func() bool {
		resp, err := c.d.rt.ListPodSandbox(ctxT(t, 10*time.Second), &runtimeapi.ListPodSandboxRequest{})
		return err == nil && len(resp.Items) == 0
	})
	c.d.checkNothingLeft(t)
	// kubelet's own per-pod directories and mounts go with the pods.
	if ents, _ := os.ReadDir(filepath.Join(c.dir, "kubelet", "pods")); len(ents) > 0 {
		t.Errorf("kubelet pod directories left: %d", len(ents))
	}
}

// kubeletStats: kubelet's summary API (what metrics-server and `kubectl
// top` read) has CPU and memory of a running pod's containers from ketch.
func kubeletStats(t *testing.T, c *cluster) {
	ns := c.namespace(t)
	c.applyPods(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: busy}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: "{{busybox}}", command: [sh, -c, 'while true; do :; done']}]
`)
	c.waitPod(t, ns, "busy", "running", 60*time.Second, podReady)
	var summary struct {
		Pods []struct {
			PodRef struct {
				Name, Namespace string
			} `json:"podRef"`
			Containers []struct {
				Name string `json:"name"`
				CPU  struct {
					UsageCoreNanoSeconds uint64 `json:"usageCoreNanoSeconds"`
				} `json:"cpu"`
				Memory struct {
					WorkingSetBytes uint64 `json:"workingSetBytes"`
				} `json:"memory"`
			} `json:"containers"`
		} `json:"pods"`
	}
	waitFor(t, 60*time.Second, "the pod's CPU and memory in /stats/summary", func() bool {
		if err := json.Unmarshal([]byte(c.kubeletGet(t, "/stats/summary")), &summary); err != nil {
			t.Fatal(err)
		}
		for _, p := range summary.Pods {
			if p.PodRef.Namespace == ns && p.PodRef.Name == "busy" && len(p.Containers) == 1 {
				ct := p.Containers[0]
				return ct.Name == "main" && ct.CPU.UsageCoreNanoSeconds > 0 && ct.Memory.WorkingSetBytes > 0
			}
		}
		return false
	})
}
