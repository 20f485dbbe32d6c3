package shim

import (
	"math"
	"testing"

	"github.com/opencontainers/cgroups"
)

func TestStatsFigures(t *testing.T) {
	const mib = 1 << 20
	var zero uint64 // the library subtracts memory from an absent memsw
	for _, tc := range []struct {
		desc                                      string
		mem                                       cgroups.MemoryStats
		workingSet, limit, avail, swap, swapLimit uint64
		swapLimited                               bool
	}{
		{desc: "v1 without a limit or swap accounting",
			mem:        cgroups.MemoryStats{Usage: cgroups.MemoryData{Usage: 10 * mib, Limit: math.MaxInt64 &^ 4095}, Stats: map[string]uint64{"total_inactive_file": 4 * mib}, SwapOnlyUsage: cgroups.MemoryData{Usage: zero - 10*mib}},
			workingSet: 6 * mib},
		{desc: "v1 with a limit and memsw",
			mem:        cgroups.MemoryStats{Usage: cgroups.MemoryData{Usage: 10 * mib, Limit: 80 * mib}, SwapUsage: cgroups.MemoryData{Usage: 12 * mib, Limit: 100 * mib}, SwapOnlyUsage: cgroups.MemoryData{Usage: 2 * mib}, Stats: map[string]uint64{"total_inactive_file": 4 * mib}},
			workingSet: 6 * mib, limit: 80 * mib, avail: 74 * mib, swap: 2 * mib, swapLimit: 20 * mib, swapLimited: true},
		{desc: "v2 without swap (kubelet's NoSwap: swap.max 0)",
			mem:        cgroups.MemoryStats{Usage: cgroups.MemoryData{Usage: 10 * mib, Limit: 80 * mib}, SwapUsage: cgroups.MemoryData{Usage: 10 * mib, Limit: 80 * mib}},
			workingSet: 10 * mib, limit: 80 * mib, avail: 70 * mib, swapLimited: true},
		{desc: "v2 with a limit, swap unlimited",
			mem:        cgroups.MemoryStats{Usage: cgroups.MemoryData{Usage: 10 * mib, Limit: 80 * mib}, SwapUsage: cgroups.MemoryData{Usage: 10 * mib, Limit: math.MaxUint64}, Stats: map[string]uint64{"inactive_file": 1 * mib}},
			workingSet: 9 * mib, limit: 80 * mib, avail: 71 * mib},
		{desc: "inactive file above usage",
			mem:   cgroups.MemoryStats{Usage: cgroups.MemoryData{Usage: 1 * mib, Limit: 2 * mib}, Stats: map[string]uint64{"inactive_file": 3 * mib}},
			limit: 2 * mib, avail: 2 * mib},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s := Stats{Cgroup: cgroups.Stats{MemoryStats: tc.mem}}
			if got := s.MemoryWorkingSet(); got != tc.workingSet {
				t.Errorf("working set = %d, want %d", got, tc.workingSet)
			}
			if got := s.MemoryLimit(); got != tc.limit {
				t.Errorf("limit = %d, want %d", got, tc.limit)
			}
			if got := s.MemoryAvailable(); got != tc.avail {
				t.Errorf("available = %d, want %d", got, tc.avail)
			}
			if got := s.SwapUsage(); got != tc.swap {
				t.Errorf("swap = %d, want %d", got, tc.swap)
			}
			if got, ok := s.SwapLimit(); got != tc.swapLimit || ok != tc.swapLimited {
				t.Errorf("swap limit = %d, %v; want %d, %v", got, ok, tc.swapLimit, tc.swapLimited)
			}
		})
	}
}

func TestKeyed(t *testing.T) {
	for _, tc := range []struct {
		desc, file, key string
		want            uint64
		ok              bool
	}{
		{"v1 oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill", 3, true},
		{"v2 memory.events", "low 0\nhigh 0\nmax 5\noom 2\noom_kill 2\noom_group_kill 0\n", "oom_kill", 2, true},
		{"a /proc status line", "Name:\tsleep\nThreads:\t4\n", "Threads", 4, true},
		{"a prefix is not the key", "oom_kill_disable 0\n", "oom_kill", 0, false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got, ok := keyed([]byte(tc.file), tc.key); got != tc.want || ok != tc.ok {
				t.Errorf("keyed = %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}
