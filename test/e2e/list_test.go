//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestTenThousandContainers: a workflow node keeps its exited steps until
// kubelet collects them. With 10,000 containers of 2 kB of metadata each,
// ListContainers is over the 16 MiB kubelet's client receives and says so
// as ResourceExhausted; StreamContainers returns every one; removing the
// pods leaves nothing.
func TestTenThousandContainers(t *testing.T) {
	const pods, perPod = 10, 1000
	d := startKetchd(t, daemonOpts{network: true})
	if _, err := d.pull(t, busybox, nil); err != nil {
		t.Fatal(err)
	}
	podIDs := make([]string, pods)
	podCfgs := make([]*runtimeapi.PodSandboxConfig, pods)
	for i := range pods {
		podCfgs[i] = podConfig(t, fmt.Sprintf("steps-%d", i))
		podIDs[i] = d.runPod(t, podCfgs[i])
	}
	// What kubelet and a workflow engine put on a step's container.
	annotations := map[string]string{
		"io.kubernetes.container.hash":                     "5e1ab0c4",
		"io.kubernetes.container.terminationMessagePath":   "/dev/termination-log",
		"io.kubernetes.container.terminationMessagePolicy": "File",
		"workflows.argoproj.io/template":                   strings.Repeat(`{"name":"step","container":{"image":"busybox"}}`, 40),
	}

	start := time.Now()
	var created atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := w; n < pods*perPod; n += 16 {
				cfg := containerConfig(fmt.Sprintf("step-%d", n), "true")
				cfg.Annotations = annotations
				p := n % pods
				_, err := d.rt.CreateContainer(ctxT(t, time.Minute), &runtimeapi.CreateContainerRequest{
					PodSandboxId: podIDs[p], Config: cfg, SandboxConfig: podCfgs[p]})
				if err != nil {
					errs <- fmt.Errorf("container %d: %w", n, err)
					return
				}
				created.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d containers created in %v", created.Load(), time.Since(start).Round(time.Millisecond))

	start = time.Now()
	_, err := d.rt.ListContainers(ctxT(t, time.Minute), &runtimeapi.ListContainersRequest{})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "StreamContainers") {
		t.Errorf("ListContainers of %d containers: %v, want ResourceExhausted naming StreamContainers", pods*perPod, err)
	}
	t.Logf("ListContainers refused in %v: %v", time.Since(start).Round(time.Millisecond), err)

	start = time.Now()
	stream, err := d.rt.StreamContainers(ctxT(t, time.Minute), &runtimeapi.StreamContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	seen, msgs := map[string]bool{}, 0
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("StreamContainers after %d messages: %v", msgs, err)
		}
		msgs++
		for _, c := range resp.Containers {
			if c.State != runtimeapi.ContainerState_CONTAINER_CREATED || c.Annotations["io.kubernetes.container.hash"] != "5e1ab0c4" {
				t.Errorf("container %s: %v %v", c.Id, c.State, c.Annotations)
			}
			seen[c.Id] = true
		}
	}
	if len(seen) != pods*perPod {
		t.Errorf("StreamContainers returned %d containers, want %d", len(seen), pods*perPod)
	}
	t.Logf("StreamContainers: %d containers in %d messages in %v", len(seen), msgs, time.Since(start).Round(time.Millisecond))

	// A filter narrows the list under the limit: List answers.
	start = time.Now()
	if got := d.containers(t, &runtimeapi.ContainerFilter{PodSandboxId: podIDs[0]}); len(got) != perPod {
		t.Errorf("ListContainers of one pod: %d containers, want %d", len(got), perPod)
	}
	t.Logf("ListContainers of one pod's %d: %v", perPod, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	for _, id := range podIDs {
		d.stopPod(t, id)
		d.removePod(t, id)
	}
	t.Logf("%d pods with their containers removed in %v", pods, time.Since(start).Round(time.Millisecond))
	for _, id := range podIDs {
		d.checkPodGone(t, id)
	}
	d.checkNoContainerLeft(t)
}
