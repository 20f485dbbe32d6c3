package server

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// Update applies r to running container id's cgroup: the limits kubelet
// resizes in place. Fields r leaves unset keep their values.
func (s *Service) Update(_ context.Context, id string, r *specs.LinuxResources) error {
	c, err := s.get(id)
	if err != nil {
		return err
	}
	if !c.running() {
		return fmt.Errorf("update %s: not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	config := c.lc.Config()
	applyResources(config.Cgroups.Resources, r)
	if err := c.lc.Set(config); err != nil {
		return fmt.Errorf("update %s: %w", id, err)
	}
	return nil
}

func applyResources(cg *cgroups.Resources, r *specs.LinuxResources) {
	if cpu := r.CPU; cpu != nil {
		if cpu.Shares != nil {
			cg.CpuShares = *cpu.Shares
		}
		if cpu.Quota != nil {
			cg.CpuQuota = *cpu.Quota
		}
		if cpu.Period != nil {
			cg.CpuPeriod = *cpu.Period
		}
		if cpu.Cpus != "" {
			cg.CpusetCpus = cpu.Cpus
		}
		if cpu.Mems != "" {
			cg.CpusetMems = cpu.Mems
		}
	}
	if m := r.Memory; m != nil {
		if m.Limit != nil {
			cg.Memory = *m.Limit
		}
		if m.Swap != nil {
			cg.MemorySwap = *m.Swap
		}
	}
	for _, h := range r.HugepageLimits {
		cg.HugetlbLimit = append(cg.HugetlbLimit, &cgroups.HugepageLimit{Pagesize: h.Pagesize, Limit: h.Limit})
	}
	if len(r.Unified) > 0 {
		cg.Unified = r.Unified
	}
}
