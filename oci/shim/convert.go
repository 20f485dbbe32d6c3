package shim

import (
	"encoding/json"
	"fmt"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"ketch.dev/ketch/oci/shim/api"
)

func exitFromProto(e *api.Exit) *Exit {
	if e == nil {
		return nil
	}
	return &Exit{Code: int(e.GetExitCode()), Signal: syscall.Signal(e.GetSignal()), At: time.Unix(0, e.GetExitedAtUnixNano()), OOMKilled: e.GetOomKilled(),
		Result: e.GetResult(), Truncated: e.GetResultTruncated()}
}

func stateFromProto(r *api.StateResponse) State {
	s := State{ID: r.GetId(), Status: Status(r.GetStatus()), Pid: int(r.GetPid()), Exit: exitFromProto(r.GetExit())}
	if n := r.GetStartedAtUnixNano(); n != 0 {
		s.StartedAt = time.Unix(0, n)
	}
	return s
}

func statsFromProto(r *api.StatsResponse) (Stats, error) {
	s := Stats{
		At:                time.Unix(0, r.GetTimestampUnixNano()),
		OOMKills:          r.GetOomKills(),
		FileDescriptors:   r.GetFileDescriptors(),
		Sockets:           r.GetSockets(),
		Threads:           r.GetThreads(),
		OpenFilesLimit:    r.GetOpenFilesLimit(),
		CPUShares:         r.GetCpuShares(),
		CPUPeriod:         r.GetCpuPeriod(),
		CPUQuota:          r.GetCpuQuota(),
		MemoryReservation: r.GetMemoryReservation(),
		NetDev:            r.GetNetDev(),
	}
	if len(r.GetCgroupJson()) == 0 {
		return Stats{}, fmt.Errorf("the pod's shim predates this ketchd's stats; they come back when the pod is recreated: %w", errdefs.ErrNotImplemented)
	}
	if err := json.Unmarshal(r.GetCgroupJson(), &s.Cgroup); err != nil {
		return Stats{}, fmt.Errorf("cgroup stats from the shim: %w", err)
	}
	return s, nil
}
