package cri

import (
	"fmt"

	"github.com/containerd/errdefs"

	"ketch.dev/ketch/cri/store"
)

// findContainer looks a container up by ID or unique ID prefix.
func (s *Server) findContainer(idOrPrefix string) (store.Container, error) {
	if idOrPrefix == "" {
		return store.Container{}, fmt.Errorf("container ID is empty: %w", errdefs.ErrInvalidArgument)
	}
	return s.store.GetContainer(idOrPrefix)
}

// findSandbox looks a pod up by ID or unique ID prefix.
func (s *Server) findSandbox(idOrPrefix string) (store.Sandbox, error) {
	if idOrPrefix == "" {
		return store.Sandbox{}, fmt.Errorf("pod sandbox ID is empty: %w", errdefs.ErrInvalidArgument)
	}
	return s.store.GetSandbox(idOrPrefix)
}
