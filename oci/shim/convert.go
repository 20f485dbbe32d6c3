package shim

import (
	"encoding/json"
	"fmt"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"ketch.dev/ketch/oci/shim/api"
)

func exitToProto(e *Exit) *api.Exit {
	if e == nil {
		return nil
	}
	return &api.Exit{ExitCode: int32(e.Code), Signal: int32(e.Signal), ExitedAtUnixNano: e.At.UnixNano(), OomKilled: e.OOMKilled,
		Result: e.Result, ResultTruncated: e.Truncated}
}

func exitFromProto(e *api.Exit) *Exit {
	if e == nil {
		return nil
	}
	return &Exit{Code: int(e.GetExitCode()), Signal: syscall.Signal(e.GetSignal()), At: time.Unix(0, e.GetExitedAtUnixNano()), OOMKilled: e.GetOomKilled(),
		Result: e.GetResult(), Truncated: e.GetResultTruncated()}
}

func stateToProto(s State) *api.StateResponse {
	r := &api.StateResponse{Id: s.ID, Status: api.Status(s.Status), Pid: uint32(s.Pid), Exit: exitToProto(s.Exit)}
	if !s.StartedAt.IsZero() {
		r.StartedAtUnixNano = s.StartedAt.UnixNano()
	}
	return r
}

func stateFromProto(r *api.StateResponse) State {
	s := State{ID: r.GetId(), Status: Status(r.GetStatus()), Pid: int(r.GetPid()), Exit: exitFromProto(r.GetExit())}
	if n := r.GetStartedAtUnixNano(); n != 0 {
		s.StartedAt = time.Unix(0, n)
	}
	return s
}

func statsToProto(s Stats) (*api.StatsResponse, error) {
	cg, err := json.Marshal(s.Cgroup)
	if err != nil {
		return nil, err
	}
	return &api.StatsResponse{
		TimestampUnixNano: s.At.UnixNano(),
		CgroupJson:        cg,
		OomKills:          s.OOMKills,
		FileDescriptors:   s.FileDescriptors,
		Sockets:           s.Sockets,
		Threads:           s.Threads,
		OpenFilesLimit:    s.OpenFilesLimit,
		CpuShares:         s.CPUShares,
		CpuPeriod:         s.CPUPeriod,
		CpuQuota:          s.CPUQuota,
		MemoryReservation: s.MemoryReservation,
		NetDev:            s.NetDev,
	}, nil
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
