package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"ketch.dev/ketch/oci/shim"
)

// Stats reads container id's cgroup usage and settings, or with o.Pod the
// pod's cgroup usage.
func (s *Service) Stats(_ context.Context, id string, o shim.StatsOptions) (shim.Stats, error) {
	c, err := s.get(id)
	if err != nil {
		return shim.Stats{}, err
	}
	paths := c.cgroupPaths()
	if paths == nil {
		return shim.Stats{}, nil // not started: no cgroup yet
	}
	if o.Pod {
		up := make(map[string]string, len(paths))
		for k, p := range paths {
			up[k] = filepath.Dir(p)
		}
		paths = up
	}
	st, err := shim.ReadCgroup(paths, o.Full)
	if err != nil {
		return shim.Stats{}, fmt.Errorf("stats of %s: %w", id, err)
	}
	if id == s.id {
		// The sandbox's PID 1, which the shim has not reaped while it
		// serves it (the PID is still its), is in the pod's netns.
		st.NetDev, _ = os.ReadFile(filepath.Join("/proc", strconv.Itoa(c.pid), "net", "dev"))
	}
	if o.Pod {
		return st, nil
	}
	c.mu.Lock()
	cpu := c.resources.CPU
	st.CPUShares, st.CPUPeriod, st.CPUQuota = deref(cpu.Shares), deref(cpu.Period), max(deref(cpu.Quota), 0)
	st.MemoryReservation = uint64(max(deref(c.resources.Memory.Reservation), 0))
	c.mu.Unlock()
	if st.CPUShares == 0 {
		st.CPUShares = 1024 // the kernel's default
	}
	if st.CPUPeriod == 0 {
		st.CPUPeriod = 100000 // the kernel's default, in µs
	}
	if o.Full {
		if pids, err := cgroupPids(paths); err == nil {
			st.FileDescriptors, st.Sockets, st.Threads = procCounts(pids)
		}
		st.OpenFilesLimit = openFilesLimit(c.pid)
	}
	return st, nil
}

// procCounts counts the open files, sockets and threads of pids, as
// cAdvisor does; a process that exits meanwhile counts for nothing.
func procCounts(pids []int) (fds, sockets, threads uint64) {
	for _, pid := range pids {
		dir := filepath.Join("/proc", strconv.Itoa(pid))
		if tasks, err := os.ReadDir(filepath.Join(dir, "task")); err == nil {
			threads += uint64(len(tasks))
		}
		ents, err := os.ReadDir(filepath.Join(dir, "fd"))
		if err != nil {
			continue
		}
		fds += uint64(len(ents))
		for _, e := range ents {
			if l, err := os.Readlink(filepath.Join(dir, "fd", e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
				sockets++
			}
		}
	}
	return fds, sockets, threads
}

// openFilesLimit is pid's soft RLIMIT_NOFILE, 0 if unknown or unlimited.
func openFilesLimit(pid int) uint64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "limits"))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "Max open files"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				v, _ := strconv.ParseUint(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

func deref[T any](p *T) T {
	var v T
	if p != nil {
		v = *p
	}
	return v
}
