package server

import (
	"encoding/json"

	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/oci/shim/api"
)

func exitToProto(e *shim.Exit) *api.Exit {
	if e == nil {
		return nil
	}
	return &api.Exit{ExitCode: int32(e.Code), Signal: int32(e.Signal), ExitedAtUnixNano: e.At.UnixNano(), OomKilled: e.OOMKilled,
		Result: e.Result, ResultTruncated: e.Truncated}
}

func stateToProto(s shim.State) *api.StateResponse {
	r := &api.StateResponse{Id: s.ID, Status: api.Status(s.Status), Pid: uint32(s.Pid), Exit: exitToProto(s.Exit)}
	if !s.StartedAt.IsZero() {
		r.StartedAtUnixNano = s.StartedAt.UnixNano()
	}
	return r
}

func statsToProto(s shim.Stats) (*api.StatsResponse, error) {
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
