package server

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// Update applies r to running container id's cgroups: the limits kubelet
// resizes in place. Fields r leaves unset keep their values.
func (s *Service) Update(_ context.Context, id string, r *specs.LinuxResources) error {
	c, err := s.get(id)
	if err != nil {
		return err
	}
	if !c.running() {
		return fmt.Errorf("update %s: not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	if err := s.reaper.hold(func() error { return s.runc.Update(id, r) }); err != nil {
		return fmt.Errorf("update %s: %w", id, err)
	}
	// What Stats reports of the settings.
	c.mu.Lock()
	defer c.mu.Unlock()
	if cpu := r.CPU; cpu != nil {
		if c.resources.CPU == nil {
			c.resources.CPU = &specs.LinuxCPU{}
		}
		if cpu.Shares != nil {
			c.resources.CPU.Shares = cpu.Shares
		}
		if cpu.Period != nil {
			c.resources.CPU.Period = cpu.Period
		}
		if cpu.Quota != nil {
			c.resources.CPU.Quota = cpu.Quota
		}
	}
	if m := r.Memory; m != nil && m.Reservation != nil {
		if c.resources.Memory == nil {
			c.resources.Memory = &specs.LinuxMemory{}
		}
		c.resources.Memory.Reservation = m.Reservation
	}
	return nil
}
