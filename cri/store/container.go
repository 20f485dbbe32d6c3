package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// ContainerState is where a container is in its life. Creating is ketch's
// own (CreateContainer's steps still running: a restart undoes them); the
// others are the CRI's CREATED, RUNNING and EXITED. UNKNOWN is not stored: it
// is what ketchd reports while it cannot reach the pod's shim.
type ContainerState string

const (
	ContainerCreating ContainerState = "creating"
	ContainerCreated  ContainerState = "created"
	ContainerRunning  ContainerState = "running"
	ContainerExited   ContainerState = "exited"
)

// Container is one container of a pod: what ContainerStatus reports and what
// its cleanup needs. The JSON names are the on-disk schema.
type Container struct {
	ID        string `json:"id"`
	SandboxID string `json:"sandbox_id"`
	Name      string `json:"name"`
	Attempt   uint32 `json:"attempt"`
	// Key is the reserved name, <pod-id>/<name>_<attempt>, built by the
	// caller: names are unique per pod, and the pod ID in front lets
	// DeleteSandbox see with one seek whether the pod still has containers.
	Key         string            `json:"key"`
	State       ContainerState    `json:"state"`
	CreatedAt   time.Time         `json:"created_at"`
	StartedAt   time.Time         `json:"started_at"`
	FinishedAt  time.Time         `json:"finished_at"`
	ExitCode    int32             `json:"exit_code"`
	Reason      string            `json:"reason"`
	Message     string            `json:"message"`
	Image       string            `json:"image"`       // as the request named it
	ImageRef    string            `json:"image_ref"`   // a repo digest of the image, or its ID
	ImageID     string            `json:"image_id"`    // the image's ID (config digest)
	StopSignal  string            `json:"stop_signal"` // the image's, e.g. "SIGQUIT"; "" is SIGTERM
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	LogPath     string            `json:"log_path"` // absolute: the pod's log directory joined with the config's path
	// User is the identity the container's process runs as, resolved at
	// create from the config and the image's /etc/passwd and /etc/group.
	User *User `json:"user,omitempty"`
	// Spec is the runtime spec the container was created with (JSON), for
	// verbose status.
	Spec json.RawMessage `json:"spec,omitempty"`
	// WantResult: the container keeps its stdout as its result, which its
	// exit brings: the bytes as captured, and whether the cap cut them.
	WantResult      bool   `json:"want_result,omitempty"`
	Result          []byte `json:"result,omitempty"`
	ResultTruncated bool   `json:"result_truncated,omitempty"`
	PID             int    `json:"pid"`
	// Removing: RemoveContainer has begun, so a restart finishes it.
	Removing bool `json:"removing,omitempty"`
	// Config is the marshalled CRI ContainerConfig.
	Config []byte `json:"config"`
}

func (c Container) ident() (string, string) { return c.ID, c.Key }

// User is a process's Linux identity.
type User struct {
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups,omitempty"` // supplementary
}

// ContainerFilter selects containers as the CRI ContainerFilter does: all set
// fields must match.
type ContainerFilter struct {
	// ID and SandboxID are full IDs or unique prefixes; one matching none or
	// several records selects nothing.
	ID            string
	SandboxID     string
	State         *ContainerState
	LabelSelector map[string]string
}

// CreateContainer reserves c.Key for c.ID and writes c in one transaction,
// like CreateSandbox. Its sandbox must exist (ErrNotFound otherwise) and be
// ready (ErrFailedPrecondition), checked in the same transaction, so a pod
// being stopped or removed cannot gain a container behind its back.
func (s *Store) CreateContainer(c Container) error {
	if c.SandboxID == "" || !strings.HasPrefix(c.Key, c.SandboxID+"/") {
		return fmt.Errorf("container name key %q must start with its pod ID %q: %w", c.Key, c.SandboxID, errdefs.ErrInvalidArgument)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		data := tx.Bucket(sandboxes.records).Get([]byte(c.SandboxID))
		if data == nil {
			return fmt.Errorf("sandbox %s of container %s: %w", c.SandboxID, c.Name, errdefs.ErrNotFound)
		}
		var sb Sandbox
		if err := json.Unmarshal(data, &sb); err != nil {
			return err
		}
		if sb.State != SandboxReady {
			return fmt.Errorf("sandbox %s of container %s is %s: %w", c.SandboxID, c.Name, sb.State, errdefs.ErrFailedPrecondition)
		}
		return insert(tx, containers, c)
	})
}

// GetContainer returns the container with this ID or unique ID prefix:
// ErrNotFound when none matches, ErrInvalidArgument when several do.
func (s *Store) GetContainer(idOrPrefix string) (Container, error) {
	return get[Container](s.db, containers, idOrPrefix)
}

// UpdateContainer changes the container with this full ID through fn, in one
// transaction; fn's error leaves the record untouched and is returned.
func (s *Store) UpdateContainer(id string, fn func(*Container) error) (Container, error) {
	return update(s.db, containers, id, fn)
}

// DeleteContainer removes the container and frees its name in one
// transaction; a missing container is no error.
func (s *Store) DeleteContainer(id string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return remove[Container](tx, containers, id) })
}

// ListContainers returns the containers f selects, in ID order. A filter
// by ID reads one record, and one by pod only that pod's (found through the
// name index, whose keys start with the pod ID), so that a pod's lookups
// cost the same on a node of 10,000 containers as on an empty one.
func (s *Store) ListContainers(f ContainerFilter) ([]Container, error) {
	var out []Container
	err := s.db.View(func(tx *bolt.Tx) error {
		records := tx.Bucket(containers.records)
		id, ok := resolve(records, f.ID)
		if !ok {
			return nil
		}
		sbID, ok := resolve(tx.Bucket(sandboxes.records), f.SandboxID)
		if !ok {
			return nil
		}
		keep := func(c Container) {
			if (id == "" || c.ID == id) && (sbID == "" || c.SandboxID == sbID) &&
				(f.State == nil || c.State == *f.State) && matchLabels(c.Labels, f.LabelSelector) {
				out = append(out, c)
			}
		}
		switch {
		case id != "":
			return decodeInto(records.Get([]byte(id)), keep)
		case sbID != "":
			p := []byte(sbID + "/")
			cur := tx.Bucket(containers.names).Cursor()
			for k, v := cur.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = cur.Next() {
				if err := decodeInto(records.Get(v), keep); err != nil {
					return err
				}
			}
			slices.SortFunc(out, func(a, b Container) int { return strings.Compare(a.ID, b.ID) })
			return nil
		}
		return each(tx, containers, keep)
	})
	return out, err
}
