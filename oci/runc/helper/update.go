package helper

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// update applies resources (a specs.LinuxResources) to running container
// id's cgroups: the limits kubelet resizes in place. Fields it leaves
// unset keep their values.
func update(root, id string, resources []byte) error {
	var r *specs.LinuxResources
	if err := json.Unmarshal(resources, &r); err != nil {
		return invalidError{fmt.Errorf("resources: %w", err)}
	}
	if r == nil {
		return invalidError{errors.New("no resources")}
	}
	lc, err := libcontainer.Load(root, id)
	if err != nil {
		return fmt.Errorf("load %s: %w", id, err)
	}
	config := lc.Config()
	applyResources(config.Cgroups.Resources, r)
	return lc.Set(config)
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
