package shim

import (
	"context"
	"fmt"
	"time"

	"github.com/opencontainers/cgroups"
)

// Stats reads container id's cgroup usage.
func (s *Service) Stats(_ context.Context, id string) (Stats, error) {
	c, err := s.get(id)
	if err != nil {
		return Stats{}, err
	}
	st, err := c.lc.Stats()
	if err != nil {
		return Stats{}, fmt.Errorf("stats of %s: %w", id, err)
	}
	return statsFromCgroup(st.CgroupStats, time.Now()), nil
}

// statsFromCgroup picks kubelet's figures out of either cgroup version's
// memory.stat keys: v1 has total_* for the hierarchy, v2 plain names.
func statsFromCgroup(cg *cgroups.Stats, at time.Time) Stats {
	if cg == nil {
		return Stats{At: at}
	}
	m := cg.MemoryStats
	pick := func(v1, v2 string) uint64 {
		if v, ok := m.Stats[v1]; ok {
			return v
		}
		return m.Stats[v2]
	}
	ws := m.Usage.Usage
	if inactive := pick("total_inactive_file", "inactive_file"); inactive < ws {
		ws -= inactive
	} else {
		ws = 0
	}
	return Stats{
		At:               at,
		CPUUsageNanos:    cg.CpuStats.CpuUsage.TotalUsage,
		MemoryUsage:      m.Usage.Usage,
		MemoryWorkingSet: ws,
		MemoryRSS:        pick("total_rss", "anon"),
		PageFaults:       pick("total_pgfault", "pgfault"),
		MajorPageFaults:  pick("total_pgmajfault", "pgmajfault"),
		Processes:        cg.PidsStats.Current,
	}
}
