package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// SandboxState is where a pod is in its life. The CRI knows only READY and
// NOTREADY; Creating is ketch's own, so a restart can tell a pod whose
// RunPodSandbox was cut short (undo its steps) from one that was stopped.
type SandboxState string

const (
	SandboxCreating SandboxState = "creating"
	SandboxReady    SandboxState = "ready"
	SandboxNotReady SandboxState = "notready"
)

// Sandbox is one pod: what the CRI reports about it and what its cleanup
// needs. The JSON names are the on-disk schema; renaming one is a schema change.
type Sandbox struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	UID       string `json:"uid"`
	Attempt   uint32 `json:"attempt"`
	// Key is the reserved name, <name>_<namespace>_<uid>_<attempt>, built by
	// the caller; it cannot change after CreateSandbox.
	Key            string            `json:"key"`
	State          SandboxState      `json:"state"`
	CreatedAt      time.Time         `json:"created_at"`
	Labels         map[string]string `json:"labels"`
	Annotations    map[string]string `json:"annotations"`
	RuntimeHandler string            `json:"runtime_handler"`
	NetNSPath      string            `json:"netns_path"` // empty with the host's network
	IPs            []string          `json:"ips"`        // primary first, as CNI returned them
	PID            int               `json:"pid"`        // ketch-init, the pod's PID 1
	LogDirectory   string            `json:"log_directory"`
	// Removing: RemovePodSandbox has begun, so a restart finishes it.
	Removing bool `json:"removing,omitempty"`
	// Config is the marshalled CRI PodSandboxConfig, so whatever is not
	// copied into a field above can still be recovered.
	Config []byte `json:"config"`
	// Resources is the marshalled LinuxContainerResources the last
	// UpdatePodSandboxResources asked for; nil before one.
	Resources []byte `json:"resources,omitempty"`
}

func (sb Sandbox) ident() (string, string) { return sb.ID, sb.Key }

// SandboxFilter selects sandboxes as the CRI PodSandboxFilter does: all set
// fields must match.
type SandboxFilter struct {
	// ID is a full ID or a unique prefix of one; a prefix matching none or
	// several sandboxes selects nothing.
	ID            string
	State         *SandboxState
	LabelSelector map[string]string // every pair must be among the labels
}

// CreateSandbox reserves sb.Key for sb.ID and writes sb in one transaction.
// A name held by another ID is an ErrAlreadyExists naming that ID; creating
// the same ID under the same name again is a no-op (the record is kept as is).
func (s *Store) CreateSandbox(sb Sandbox) error {
	s.write.Lock()
	defer s.write.Unlock()
	var wrote bool
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		wrote, err = insert(tx, sandboxes, sb)
		return err
	})
	if err == nil && wrote {
		s.cachePod(sb)
	}
	return err
}

// cachePod keeps a copy of committed record sb for lists; the caller holds
// write.
func (s *Store) cachePod(sb Sandbox) {
	sb.Labels, sb.Annotations, sb.IPs = maps.Clone(sb.Labels), maps.Clone(sb.Annotations), slices.Clone(sb.IPs)
	sb.Config, sb.Resources = slices.Clone(sb.Config), slices.Clone(sb.Resources)
	s.mu.Lock()
	s.pods[sb.ID] = &sb
	s.mu.Unlock()
}

// GetSandbox returns the sandbox with this ID or unique ID prefix:
// ErrNotFound when none matches, ErrInvalidArgument when several do.
func (s *Store) GetSandbox(idOrPrefix string) (Sandbox, error) {
	return get[Sandbox](s.db, sandboxes, idOrPrefix)
}

// UpdateSandbox changes the sandbox with this full ID through fn, in one
// transaction; fn's error leaves the record untouched and is returned.
func (s *Store) UpdateSandbox(id string, fn func(*Sandbox) error) (Sandbox, error) {
	s.write.Lock()
	defer s.write.Unlock()
	sb, err := update(s.db, sandboxes, id, fn)
	if err == nil {
		s.cachePod(sb)
	}
	return sb, err
}

// DeleteSandbox removes the sandbox and frees its name in one transaction,
// and publishes that (Deleted, with the last record). A missing sandbox is
// no error. A sandbox that still has containers is an
// ErrFailedPrecondition: their records would point at nothing.
func (s *Store) DeleteSandbox(id string) error {
	s.write.Lock()
	defer s.write.Unlock()
	var last *Sandbox
	err := s.db.Update(func(tx *bolt.Tx) error {
		// Container names start with the pod ID, so one seek finds any.
		p := []byte(id + "/")
		if k, ctr := tx.Bucket(containers.names).Cursor().Seek(p); k != nil && bytes.HasPrefix(k, p) {
			return fmt.Errorf("sandbox %s still has container %s: %w", id, ctr, errdefs.ErrFailedPrecondition)
		}
		if data := tx.Bucket(sandboxes.records).Get([]byte(id)); data != nil {
			last = &Sandbox{}
			if err := json.Unmarshal(data, last); err != nil {
				return err
			}
		}
		return remove[Sandbox](tx, sandboxes, id)
	})
	if err == nil && last != nil {
		s.mu.Lock()
		delete(s.pods, id)
		s.mu.Unlock()
		s.publish(Change{PodID: id, ID: id, Kind: Deleted, Pod: last})
	}
	return err
}

// ListSandboxes returns the sandboxes f selects, in ID order, from the
// cache: copies whose maps and slices are shared, to read only. Decoding
// every record from the file took kubelet's relist of 1,000 pods ~10 ms.
// The ID filter is resolved in the file, where a prefix is one seek.
func (s *Store) ListSandboxes(f SandboxFilter) ([]Sandbox, error) {
	var id string
	ok := true
	err := s.db.View(func(tx *bolt.Tx) error {
		id, ok = resolve(tx.Bucket(sandboxes.records), f.ID)
		return nil
	})
	if err != nil || !ok {
		return nil, err
	}
	found := cached(s, s.pods, id, func(sb *Sandbox) string { return sb.ID }, func(sb *Sandbox) bool {
		return (f.State == nil || sb.State == *f.State) && matchLabels(sb.Labels, f.LabelSelector)
	})
	var out []Sandbox
	for _, sb := range found {
		out = append(out, *sb)
	}
	return out, nil
}
