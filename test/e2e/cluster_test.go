//go:build e2e

package e2e

// The cluster side of the harness: a one-node Kubernetes cluster made by
// test/kube/cluster.sh (etcd, API server, controller-manager, scheduler and a
// kubelet, all on 127.0.0.1) over a runtime of the test's own, and the
// kubectl and API helpers the kubelet and Argo suites check through.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

var (
	kubeVersion = envOr("KUBE_VERSION", "v1.37.2")
	kubeBin     = envOr("KUBE_BIN", filepath.Join(cacheDir, "kube-"+kubeVersion))
	clusterSh   = envOr("KETCH_CLUSTER_SH", "../kube/cluster.sh")
)

// Ports of the test clusters, away from those of a `make cluster` on the
// same machine.
const (
	testEtcdPort    = 23790
	testAPIPort     = 16443
	testKubeletPort = 20250
	testNode        = "e2enode"
)

// cluster is one test cluster. Its kubelet runs pods on endpoint.
type cluster struct {
	dir        string // cluster.sh's directory: kubeconfigs, logs, kubelet root
	endpoint   string // the kubelet's CRI endpoint
	podLogs    string // kubelet's podLogsDir
	kubeconfig string
	kube       kubernetes.Interface
	d          *daemon // the ketchd under it; nil for a peer runtime
	// t is the test that started the cluster: a ketchd restarted by one
	// of its subtests lives as long as the cluster.
	t *testing.T
}

type clusterOpts struct {
	// endpoint is a peer runtime's CRI endpoint; empty starts a ketchd of
	// the test's own.
	endpoint string
	// kubelet holds KubeletConfiguration lines added to the harness's.
	kubelet string
	// ketchd is appended to the ketchd's config.
	ketchd string
	// argo adds Argo Workflows' controller (cluster.sh ARGO=1).
	argo bool
	// gates are the feature gates of every component ("A=true,B=true").
	gates string
}

// startCluster brings a cluster up and takes it down (and everything it
// made on the host) when the test ends, failed or not.
func startCluster(t *testing.T, o clusterOpts) *cluster {
	t.Helper()
	for _, b := range []string{"kubelet", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"} {
		if _, err := os.Stat(filepath.Join(kubeBin, b)); err != nil {
			t.Fatalf("%v (test/kube/build.sh builds the Kubernetes binaries; make e2e-kubelet runs it)", err)
		}
	}
	// Short: kubelet puts unix sockets below its root directory.
	dir, err := os.MkdirTemp("", "ketch-kube-")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{dir: filepath.Join(dir, "c"), endpoint: o.endpoint, podLogs: filepath.Join(dir, "pods"), t: t}
	if c.endpoint == "" {
		c.d = startKetchd(t, daemonOpts{network: true, extra: o.ketchd})
		c.endpoint = "unix://" + c.d.socket
	}
	kubepodsBefore, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	up := exec.Command(clusterSh, "up", c.dir)
	up.Env = append(os.Environ(),
		"KUBE_BIN="+kubeBin,
		"RUNTIME_ENDPOINT="+c.endpoint,
		"NODE_NAME="+testNode,
		"POD_LOG_DIR="+c.podLogs,
		fmt.Sprintf("ETCD_PORT=%d", testEtcdPort),
		fmt.Sprintf("API_PORT=%d", testAPIPort),
		fmt.Sprintf("KUBELET_PORT=%d", testKubeletPort),
		"KUBELET_EXTRA="+o.kubelet,
		"FEATURE_GATES="+o.gates,
	)
	if o.argo {
		up.Env = append(up.Env, "ARGO=1")
	}
	// Registered before up, and so run after the ketchd's own clean-up
	// was registered: the cluster goes first, then the runtime.
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs(t)
		}
		if out, err := exec.Command(clusterSh, "down", c.dir).CombinedOutput(); err != nil {
			t.Errorf("cluster.sh down: %v\n%s", err, out)
		}
		for _, left := range c.leftovers(kubepodsBefore) {
			t.Errorf("the cluster left %s", left)
		}
		os.RemoveAll(dir)
	})
	if out, err := up.CombinedOutput(); err != nil {
		t.Fatalf("cluster.sh up: %v\n%s", err, out)
	}
	c.kubeconfig = filepath.Join(c.dir, "admin.kubeconfig")
	cfg, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	if c.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	return c
}

// leftovers is what of the cluster is still on the host after it is down:
// its /etc/hosts line, processes, mounts, kubelet's log links and the
// kubepods cgroups (when there were none before).
func (c *cluster) leftovers(kubepodsBefore []string) []string {
	var left []string
	if b, _ := os.ReadFile("/etc/hosts"); bytes.Contains(b, []byte(" "+testNode+" ")) {
		left = append(left, "its /etc/hosts line")
	}
	if pids := processesOf(c.dir); len(pids) > 0 {
		left = append(left, fmt.Sprintf("processes %v", pids))
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(b, []byte(" "+c.dir+"/")) {
		left = append(left, "mounts under "+c.dir)
	}
	links, _ := filepath.Glob("/var/log/containers/*.log")
	for _, l := range links {
		if to, _ := os.Readlink(l); strings.HasPrefix(to, c.podLogs+"/") {
			left = append(left, "log link "+l)
		}
	}
	if len(kubepodsBefore) == 0 {
		now, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
		left = append(left, now...)
	}
	return left
}

// kubeletGet GETs a path of the kubelet's own API as the cluster's admin:
// the API server's node proxy refuses a node on a loopback address.
func (c *cluster) kubeletGet(t *testing.T, path string) string {
	t.Helper()
	pki := filepath.Join(c.dir, "pki")
	cert, err := tls.LoadX509KeyPair(filepath.Join(pki, "admin.crt"), filepath.Join(pki, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	ca := x509.NewCertPool()
	ca.AppendCertsFromPEM([]byte(readFile(t, filepath.Join(pki, "ca.crt"))))
	cl := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: ca, ServerName: testNode,
	}}}
	resp, err := cl.Get(fmt.Sprintf("https://127.0.0.1:%d%s", testKubeletPort, path))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("kubelet %s: %s %v\n%s", path, resp.Status, err, b)
	}
	return string(b)
}

// dumpLogs logs the tail of each component's log, for a failed test.
func (c *cluster) dumpLogs(t *testing.T) {
	logs, _ := filepath.Glob(filepath.Join(c.dir, "log", "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		lines := strings.Split(string(b), "\n")
		if len(lines) > 60 {
			lines = lines[len(lines)-60:]
		}
		t.Logf("== %s (last lines)\n%s", filepath.Base(l), strings.Join(lines, "\n"))
	}
}

// kubectl runs kubectl as the cluster's admin, stdin from in.
func (c *cluster) kubectl(in string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(kubeBin, "kubectl"), append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(in)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func (c *cluster) mustKubectl(t *testing.T, in string, args ...string) string {
	t.Helper()
	out, err := c.kubectl(in, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// apply creates the objects of a YAML manifest in namespace ns.
func (c *cluster) apply(t *testing.T, ns, manifest string) {
	t.Helper()
	c.mustKubectl(t, manifest, "apply", "-n", ns, "-f", "-")
}

var nsUnsafe = regexp.MustCompile(`[^a-z0-9-]+`)

// namespace makes a namespace for one test case, deleted (pods and all)
// when the case ends, so cases running side by side never see each
// other's objects.
func (c *cluster) namespace(t *testing.T) string {
	t.Helper()
	name := strings.Trim(nsUnsafe.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(name) > 50 {
		name = strings.Trim(name[len(name)-50:], "-")
	}
	ctx := context.Background()
	if _, err := c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.deleteNamespace(t, name) })
	// Pods are refused until the controller-manager made the namespace's
	// default service account.
	waitFor(t, 30*time.Second, "service account default in "+name, func() bool {
		_, err := c.kube.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil
	})
	return name
}

func (c *cluster) deleteNamespace(t *testing.T, name string) {
	ctx := context.Background()
	zero := int64(1)
	_ = c.kube.CoreV1().Pods(name).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
	if err := c.kube.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete namespace %s: %v", name, err)
		return
	}
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := c.kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Errorf("namespace %s still there 90s after its deletion", name)
}

// waitFor polls ok until it holds, failing the test after within.
func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (c *cluster) getPod(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	p, err := c.kube.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitPod waits until pod ns/name satisfies ok and returns it; on time-out
// the test fails with the pod's last status and events.
func (c *cluster) waitPod(t *testing.T, ns, name, what string, within time.Duration, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	for {
		p, err := c.kube.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err == nil && ok(p) {
			t.Logf("pod %s/%s %s after %v", ns, name, what, time.Since(start).Round(time.Millisecond))
			return p
		}
		if time.Now().After(deadline) {
			desc, _ := c.kubectl("", "describe", "pod", "-n", ns, name)
			t.Fatalf("pod %s/%s: %s: not within %v (last error %v)\n%s", ns, name, what, within, err, desc)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitGone waits until pod ns/name is deleted from the API.
func (c *cluster) waitGone(t *testing.T, ns, name string, within time.Duration) {
	t.Helper()
	waitFor(t, within, "pod "+ns+"/"+name+" deleted", func() bool {
		_, err := c.kube.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
}

func podRunning(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning }

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podDone(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// ctrStatus is the status of the container (or init container) named.
func ctrStatus(p *corev1.Pod, name string) *corev1.ContainerStatus {
	for _, list := range [][]corev1.ContainerStatus{p.Status.ContainerStatuses, p.Status.InitContainerStatuses} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	return nil
}

// terminated is the container's terminated state, or nil.
func terminated(p *corev1.Pod, name string) *corev1.ContainerStateTerminated {
	if s := ctrStatus(p, name); s != nil {
		return s.State.Terminated
	}
	return nil
}

// logs is `kubectl logs` of one container.
func (c *cluster) logs(t *testing.T, ns, pod, ctr string, extra ...string) string {
	t.Helper()
	return c.mustKubectl(t, "", append([]string{"logs", "-n", ns, pod, "-c", ctr}, extra...)...)
}

// exec is `kubectl exec` of a command in one container.
func (c *cluster) exec(t *testing.T, ns, pod, ctr string, cmd ...string) string {
	t.Helper()
	return c.mustKubectl(t, "", append([]string{"exec", "-n", ns, pod, "-c", ctr, "--"}, cmd...)...)
}
