package server

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"
)

// Update applies resources (a specs.LinuxResources) to running container
// id's cgroups: the limits kubelet resizes in place. Fields it leaves unset
// keep their values.
func (s *Service) Update(_ context.Context, id string, resources []byte) error {
	var r settings
	if err := json.Unmarshal(resources, &r); err != nil {
		return fmt.Errorf("update %s: resources: %w: %w", id, errdefs.ErrInvalidArgument, err)
	}
	c, err := s.get(id)
	if err != nil {
		return err
	}
	if !c.running() {
		return fmt.Errorf("update %s: not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	if err := s.reaper.hold(func() error { return s.runc.Update(id, resources) }); err != nil {
		return fmt.Errorf("update %s: %w", id, err)
	}
	// What Stats reports of the settings.
	c.mu.Lock()
	defer c.mu.Unlock()
	if v := r.CPU.Shares; v != nil {
		c.resources.CPU.Shares = v
	}
	if v := r.CPU.Period; v != nil {
		c.resources.CPU.Period = v
	}
	if v := r.CPU.Quota; v != nil {
		c.resources.CPU.Quota = v
	}
	if v := r.Memory.Reservation; v != nil {
		c.resources.Memory.Reservation = v
	}
	return nil
}
