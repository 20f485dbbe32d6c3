package shim

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/fs"
	"github.com/opencontainers/cgroups/fs2"
)

// StatsOptions say what a Stats call reads besides a container's cgroup.
type StatsOptions struct {
	// Pod reads the cgroup above the sandbox's instead: the pod's own,
	// which holds all its containers when the pod named a cgroup parent of
	// its own, as kubelet does.
	Pod bool
	// Full reads every controller's figures and counts the container's
	// open files, sockets and threads (a walk of /proc): what cAdvisor's
	// metrics need. The CRI's stats need only CPU, memory and processes:
	// on cgroup v1, reading every controller cost 0.7 ms more.
	Full bool
}

// ReadCgroup reads the usage of the cgroup at paths (by controller, as
// oci.CgroupPaths gives them): with full every controller's figures, else
// what the CRI's stats need. ketchd reads a container's figures for the CRI
// itself, without a round trip to its shim. A cgroup that is gone is
// ErrNotFound.
func ReadCgroup(paths map[string]string, full bool) (Stats, error) {
	for _, key := range []string{"", "memory"} { // v2's directory, a v1 controller's
		if p, ok := paths[key]; ok {
			if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
				return Stats{}, fmt.Errorf("cgroup %s: %w", p, errdefs.ErrNotFound)
			}
		}
	}
	cg, err := readCgroup(paths, full)
	if err != nil {
		return Stats{}, fmt.Errorf("cgroup: %w", err)
	}
	return Stats{At: time.Now(), Cgroup: *cg, OOMKills: OOMKills(paths), CPUQuota: -1}, nil
}

// criControllers are the cgroup v1 controllers whose figures the CRI's
// stats report.
var criControllers = map[string]interface {
	GetStats(path string, st *cgroups.Stats) error
}{"cpu": &fs.CpuGroup{}, "cpuacct": &fs.CpuacctGroup{}, "memory": &fs.MemoryGroup{}, "pids": &fs.PidsGroup{}}

// readCgroup reads the cgroup at paths: every controller with all, else
// on cgroup v1 only criControllers (v2 reads a few files either way).
func readCgroup(paths map[string]string, all bool) (*cgroups.Stats, error) {
	// The fs managers read either driver's cgroups; a reader needs no more.
	if cgroups.IsCgroup2UnifiedMode() {
		m, err := fs2.NewManager(&cgroups.Cgroup{Resources: &cgroups.Resources{}}, paths[""])
		if err != nil {
			return nil, err
		}
		return m.GetStats()
	}
	if all {
		m, err := fs.NewManager(&cgroups.Cgroup{Resources: &cgroups.Resources{}}, paths)
		if err != nil {
			return nil, err
		}
		return m.GetStats()
	}
	st := cgroups.NewStats()
	for name, g := range criControllers {
		if p, ok := paths[name]; ok {
			if err := g.GetStats(p, st); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	return st, nil
}

// OOMKills is the kernel's count of OOM kills in the cgroup: oom_kill of
// memory.events (v2) or memory.oom_control (v1).
func OOMKills(paths map[string]string) uint64 {
	for key, file := range map[string]string{"": "memory.events", "memory": "memory.oom_control"} {
		dir, ok := paths[key]
		if !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			continue
		}
		if v, ok := keyed(b, "oom_kill"); ok {
			return v
		}
	}
	return 0
}

// keyed is the value of the "key value" line of a cgroup or /proc file.
func keyed(b []byte, key string) (uint64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && strings.TrimSuffix(f[0], ":") == key {
			v, err := strconv.ParseUint(f[1], 10, 64)
			return v, err == nil
		}
	}
	return 0, false
}

// memStat picks a memory.stat key of either version: v1 has total_* for
// the hierarchy, v2 plain names.
func (s Stats) memStat(v1, v2 string) uint64 {
	if v, ok := s.Cgroup.MemoryStats.Stats[v1]; ok {
		return v
	}
	return s.Cgroup.MemoryStats.Stats[v2]
}

// CPUUsageNanos is the cumulative CPU time.
func (s Stats) CPUUsageNanos() uint64 { return s.Cgroup.CpuStats.CpuUsage.TotalUsage }

// MemoryUsage is all memory charged to the cgroup, page cache included.
func (s Stats) MemoryUsage() uint64 { return s.Cgroup.MemoryStats.Usage.Usage }

// MemoryWorkingSet is usage less inactive file pages: what kubelet evicts by.
func (s Stats) MemoryWorkingSet() uint64 {
	u, inactive := s.MemoryUsage(), s.memStat("total_inactive_file", "inactive_file")
	if inactive >= u {
		return 0
	}
	return u - inactive
}

// MemoryRSS is anonymous memory and swap cache.
func (s Stats) MemoryRSS() uint64 { return s.memStat("total_rss", "anon") }

// MemoryCache is page cache.
func (s Stats) MemoryCache() uint64 { return s.memStat("total_cache", "file") }

// MemoryMappedFile is memory-mapped file pages.
func (s Stats) MemoryMappedFile() uint64 { return s.memStat("total_mapped_file", "file_mapped") }

// PageFaults and MajorPageFaults are cumulative counts.
func (s Stats) PageFaults() uint64      { return s.memStat("total_pgfault", "pgfault") }
func (s Stats) MajorPageFaults() uint64 { return s.memStat("total_pgmajfault", "pgmajfault") }

// MemoryLimit is the cgroup's memory limit, 0 when it has none.
func (s Stats) MemoryLimit() uint64 { return limit(s.Cgroup.MemoryStats.Usage.Limit) }

// MemoryAvailable is the limit less the working set, 0 without a limit.
func (s Stats) MemoryAvailable() uint64 {
	l, ws := s.MemoryLimit(), s.MemoryWorkingSet()
	if l <= ws {
		return 0
	}
	return l - ws
}

// SwapUsage is the swap the cgroup uses; 0 where the kernel does not
// account swap (v1 without memsw).
func (s Stats) SwapUsage() uint64 {
	m := s.Cgroup.MemoryStats
	if m.SwapUsage.Usage < m.Usage.Usage { // the library's v1 subtraction underflowed
		return 0
	}
	return m.SwapOnlyUsage.Usage
}

// SwapLimit is the cgroup's swap limit, if it has one (0 is one: no swap
// at all): what its memory and swap limit (both versions report them
// summed) leaves above its memory limit.
func (s Stats) SwapLimit() (uint64, bool) {
	both, mem := limit(s.Cgroup.MemoryStats.SwapUsage.Limit), s.MemoryLimit()
	if both == 0 || mem == 0 || both < mem {
		return 0, false
	}
	return both - mem, true
}

// Processes is the number of tasks in the cgroup.
func (s Stats) Processes() uint64 { return s.Cgroup.PidsStats.Current }

// limit is a cgroup limit, 0 for the kernel's "none" (max, or v1's page
// counter maximum).
func limit(v uint64) uint64 {
	if v == 0 || v >= 1<<62 {
		return 0
	}
	return v
}
