package store

import (
	"encoding/json"
	"fmt"
	"maps"
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
	// CgroupsPath is its spec's linux.cgroupsPath: where ketchd reads its
	// usage without asking its shim.
	CgroupsPath string `json:"cgroups_path,omitempty"`
	// Spec is the runtime spec the container was created with (JSON), for
	// verbose status; kept in its detail, as Config is.
	Spec json.RawMessage `json:"-"`
	// WantResult: the container keeps its stdout as its result, which its
	// exit brings: the bytes as captured, and whether the cap cut them.
	WantResult      bool   `json:"want_result,omitempty"`
	Result          []byte `json:"result,omitempty"`
	ResultTruncated bool   `json:"result_truncated,omitempty"`
	PID             int    `json:"pid"`
	// Removing: RemoveContainer has begun, so a restart finishes it.
	Removing bool `json:"removing,omitempty"`
	// Config is the marshalled CRI ContainerConfig.
	Config []byte `json:"-"`
	// Rev is the record's revision in this Store: listed records with the
	// same ID and Rev are the same, so what a caller derives from one
	// stays true while its Rev does. Not stored.
	Rev uint64 `json:"-"`
}

// detail is what of a container the containers bucket leaves to
// container-details.
type detail struct {
	Spec   json.RawMessage `json:"spec,omitempty"`
	Config []byte          `json:"config"`
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
	s.write.Lock()
	defer s.write.Unlock()
	wrote := false
	err := s.db.Update(func(tx *bolt.Tx) error {
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
		var err error
		wrote, err = insert(tx, containers, c)
		return err
	})
	if err == nil && wrote {
		s.cache(c)
	}
	return err
}

// cache keeps a copy of committed record c, but for its detail, for lists;
// the caller holds write.
func (s *Store) cache(c Container) {
	c.Spec, c.Config = nil, nil
	c.Labels, c.Annotations, c.Result = maps.Clone(c.Labels), maps.Clone(c.Annotations), slices.Clone(c.Result)
	if c.User != nil {
		u := *c.User
		u.Groups = slices.Clone(u.Groups)
		c.User = &u
	}
	s.rev++
	c.Rev = s.rev
	s.mu.Lock()
	s.ctrs[c.ID] = &c
	s.mu.Unlock()
}

// GetContainer returns the container with this ID or unique ID prefix:
// ErrNotFound when none matches, ErrInvalidArgument when several do.
func (s *Store) GetContainer(idOrPrefix string) (Container, error) {
	return get[Container](s.db, containers, idOrPrefix)
}

// UpdateContainer changes the container with this full ID through fn, in one
// transaction; fn's error leaves the record untouched and is returned.
func (s *Store) UpdateContainer(id string, fn func(*Container) error) (Container, error) {
	s.write.Lock()
	defer s.write.Unlock()
	c, err := update(s.db, containers, id, fn)
	if err == nil {
		s.cache(c)
	}
	return c, err
}

// DeleteContainer removes the container and frees its name in one
// transaction, and publishes that (Deleted); a missing container is no
// error.
func (s *Store) DeleteContainer(id string) error {
	s.write.Lock()
	defer s.write.Unlock()
	s.mu.RLock()
	c := s.ctrs[id]
	s.mu.RUnlock()
	err := s.db.Update(func(tx *bolt.Tx) error { return remove[Container](tx, containers, id) })
	if err == nil && c != nil {
		s.mu.Lock()
		delete(s.ctrs, id)
		s.mu.Unlock()
		s.publish(Change{PodID: c.SandboxID, ID: id, Kind: Deleted})
	}
	return err
}

// ListContainers returns the containers f selects, in ID order, from the
// cache (their Spec and Config empty: GetContainer has them). They are the
// cached records themselves, to read only: a full list of a workflow
// node's 11,000 copied 4 MB. The ID and pod filters are resolved in the
// file, where a prefix is one seek.
func (s *Store) ListContainers(f ContainerFilter) ([]*Container, error) {
	var id, sbID string
	ok := true
	err := s.db.View(func(tx *bolt.Tx) error {
		var ok1, ok2 bool
		id, ok1 = resolve(tx.Bucket(containers.records), f.ID)
		sbID, ok2 = resolve(tx.Bucket(sandboxes.records), f.SandboxID)
		ok = ok1 && ok2
		return nil
	})
	if err != nil || !ok {
		return nil, err
	}
	return cached(s, s.ctrs, id, func(c *Container) string { return c.ID }, func(c *Container) bool {
		return (sbID == "" || c.SandboxID == sbID) && (f.State == nil || c.State == *f.State) && matchLabels(c.Labels, f.LabelSelector)
	}), nil
}

// cached returns the records of cache (s.pods or s.ctrs) that keep
// selects, in ID order: the one with id, or all when id is "". Cached
// records are replaced, never changed: they may be read unlocked.
func cached[T any](s *Store, cache map[string]*T, id string, idOf func(*T) string, keep func(*T) bool) []*T {
	var found []*T
	s.mu.RLock()
	if id != "" {
		if r, ok := cache[id]; ok && keep(r) {
			found = append(found, r)
		}
	} else {
		for _, r := range cache {
			if keep(r) {
				found = append(found, r)
			}
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(found, func(a, b *T) int { return strings.Compare(idOf(a), idOf(b)) })
	return found
}
