package cri

import (
	"context"
	"log/slog"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
)

// statsCache holds the last figures of every running container and ready
// pod, read every Config.StatsPeriod in the background, so that the list
// RPCs answer from memory at any pod count: reading one container's
// cgroups through its shim costs about a millisecond of CPU, and a list of
// 1,000 containers read on demand took 3.7 s on two CPUs. Every figure
// carries the time it was read, which is all kubelet and metrics-server
// need to compute rates from it.
//
// A figure without a CPU rate yet (a container seen once) is read again
// when asked: kubelet computes the rate itself then, and two answers with
// one timestamp would give it a zero interval.
//
// Rounds run only while someone lists stats (kubelet does every 10 s):
// an idle node's runtime reads nothing.
type statsCache struct {
	mu    sync.Mutex
	ctrs  map[string]*runtimeapi.ContainerStats  // guarded by mu
	pods  map[string]*runtimeapi.PodSandboxStats // guarded by mu; without their containers
	asked time.Time                              // guarded by mu; the last list's time
}

// statsIdleRounds is how many periods without a list stop the rounds.
const statsIdleRounds = 6

// touch notes that a list asked for figures.
func (c *statsCache) touch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked = time.Now()
}

// wanted tells whether a list asked within the last d.
func (c *statsCache) wanted(d time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Since(c.asked) < d
}

// container is the cached figure of container id, if there is one
// fit to answer with. The caller must not change it.
func (c *statsCache) container(id string, maxAge time.Duration) *runtimeapi.ContainerStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.ctrs[id]
	if st == nil || st.Cpu.GetUsageNanoCores() == nil || time.Since(time.Unix(0, st.Cpu.Timestamp)) > maxAge {
		return nil
	}
	return st
}

func (c *statsCache) pod(id string, maxAge time.Duration) *runtimeapi.PodSandboxStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.pods[id]
	if st == nil || st.Linux.Cpu.GetUsageNanoCores() == nil || time.Since(time.Unix(0, st.Linux.Cpu.Timestamp)) > maxAge {
		return nil
	}
	return st
}

func (c *statsCache) putContainer(st *runtimeapi.ContainerStats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctrs == nil {
		c.ctrs = map[string]*runtimeapi.ContainerStats{}
	}
	c.ctrs[st.Attributes.Id] = st
}

func (c *statsCache) putPod(st *runtimeapi.PodSandboxStats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pods == nil {
		c.pods = map[string]*runtimeapi.PodSandboxStats{}
	}
	c.pods[st.Attributes.Id] = st
}

// replace makes what a round read the cache: what it did not find
// (stopped or removed since) goes.
func (c *statsCache) replace(ctrs []*runtimeapi.ContainerStats, pods []*runtimeapi.PodSandboxStats) {
	cm := make(map[string]*runtimeapi.ContainerStats, len(ctrs))
	for _, st := range ctrs {
		cm[st.Attributes.Id] = st
	}
	pm := make(map[string]*runtimeapi.PodSandboxStats, len(pods))
	for _, st := range pods {
		pm[st.Attributes.Id] = st
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ctrs, c.pods = cm, pm
}

// statsMaxAge is how old a cached figure may be: a round late by up to
// two periods (a node busy starting pods) still leaves the lists served
// from memory.
func (s *Server) statsMaxAge() time.Duration { return 3 * s.cfg.StatsPeriod }

// refreshStats reads every running container's and ready pod's figures
// every Config.StatsPeriod while lists ask for them, until the server
// closes; with no period the lists read on demand and nothing is kept.
func (s *Server) refreshStats() {
	if s.cfg.StatsPeriod <= 0 {
		return
	}
	s.watchers.Add(1)
	go func() {
		defer s.watchers.Done()
		// A period between the end of one round and the start of the
		// next: rounds never run back to back on a node too busy to
		// finish one in a period.
		t := time.NewTimer(s.cfg.StatsPeriod)
		defer t.Stop()
		for {
			select {
			case <-s.bg.Done():
				return
			case <-t.C:
			}
			if s.stats.wanted(statsIdleRounds * s.cfg.StatsPeriod) {
				start := time.Now()
				ctx, cancel := context.WithTimeout(s.bg, s.statsMaxAge())
				err := s.statsRound(ctx)
				cancel()
				switch took := time.Since(start); {
				case err != nil && s.bg.Err() == nil:
					slog.Warn("stats not refreshed", "err", err)
				case took > s.cfg.StatsPeriod:
					slog.Warn("a stats round took longer than stats_period", "took", took, "stats_period", s.cfg.StatsPeriod)
				default:
					slog.Debug("stats round", "took", took)
				}
			}
			t.Reset(s.cfg.StatsPeriod)
		}
	}()
}

// statsRound reads the containers before the pods, so that a pod's
// counters are never below the sum of its containers'.
func (s *Server) statsRound(ctx context.Context) error {
	running := store.ContainerRunning
	ctrs, err := s.store.ListContainers(store.ContainerFilter{State: &running})
	if err != nil {
		return err
	}
	cstats, err := gather(ctx, ctrs, ctrAttrs, s.containerStats)
	if err != nil {
		return err
	}
	ready := store.SandboxReady
	pods, err := s.store.ListSandboxes(store.SandboxFilter{State: &ready})
	if err != nil {
		return err
	}
	pstats, err := gather(ctx, pods, podAttrs, s.podOwnStats)
	if err != nil {
		return err
	}
	s.stats.replace(cstats, pstats)
	return nil
}

// cachedOr answers each item from the cache where it can and reads the
// others with read, gatherers at a time, keeping the items' order. An
// item read fails to answer is left out, as gather does.
func cachedOr[T any, R comparable](ctx context.Context, items []T, cached func(T) R, about func(T) []any, read func(context.Context, T) (R, error)) ([]R, error) {
	var zero R
	out := make([]R, len(items))
	var missing []int
	for i, it := range items {
		if out[i] = cached(it); out[i] == zero {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		type indexed struct {
			i int
			r R
		}
		got, err := gather(ctx, missing, func(i int) []any { return about(items[i]) }, func(ctx context.Context, i int) (indexed, error) {
			r, err := read(ctx, items[i])
			return indexed{i, r}, err
		})
		if err != nil {
			return nil, err
		}
		for _, x := range got {
			out[x.i] = x.r
		}
	}
	kept := out[:0]
	for _, r := range out {
		if r != zero {
			kept = append(kept, r)
		}
	}
	return kept, nil
}

func ctrAttrs(c *store.Container) []any { return []any{"container", c.ID, "pod", c.SandboxID} }
