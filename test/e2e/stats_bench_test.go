//go:build e2e

package e2e

import (
	"fmt"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// BenchmarkStats is what reading one container's or one pod's figures
// costs (what a stats round pays per item, and the single-item RPCs
// always pay), and a ListPodSandboxStats read on demand (stats_period
// "0s"), with 20 pods of one container running.
func BenchmarkStats(b *testing.B) {
	d := startKetchd(b, daemonOpts{network: true, statsPeriod: "0s"})
	d.mustPull(b, busybox)
	var pods, ctrs []string
	for i := range 20 {
		cfg := podConfig(b, fmt.Sprintf("stats-%d", i))
		cfg.LogDirectory = b.TempDir()
		pod := d.runPod(b, cfg)
		ctr := d.createContainer(b, pod, cfg, containerConfig("app", "sleep", "3600"))
		d.startContainer(b, ctr)
		pods, ctrs = append(pods, pod), append(ctrs, ctr)
	}
	b.Run("ContainerStats", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, err := d.rt.ContainerStats(ctxT(b, 10*time.Second), &runtimeapi.ContainerStatsRequest{ContainerId: ctrs[i%len(ctrs)]}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("PodSandboxStats", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, err := d.rt.PodSandboxStats(ctxT(b, 10*time.Second), &runtimeapi.PodSandboxStatsRequest{PodSandboxId: pods[i%len(pods)]}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("ListPodSandboxStats-of-20", func(b *testing.B) {
		for b.Loop() {
			resp, err := d.rt.ListPodSandboxStats(ctxT(b, 10*time.Second), &runtimeapi.ListPodSandboxStatsRequest{})
			if err != nil || len(resp.Stats) != 20 {
				b.Fatalf("ListPodSandboxStats: %d pods, %v", len(resp.GetStats()), err)
			}
		}
	})
}
