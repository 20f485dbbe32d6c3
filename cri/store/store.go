// Package store keeps ketch's pod and container metadata in a bbolt file, so
// a restarted ketchd lists the same pods and containers and a crash never
// leaves a name reserved without the record that holds it.
//
// Layout (schema version 2), every value JSON so `bbolt get` shows it plainly:
//
//	meta               "version" → "2"
//	sandboxes          ID → Sandbox
//	sandbox-names      <name>_<namespace>_<uid>_<attempt> → ID
//	containers         ID → Container, but for its spec and config
//	container-details  ID → the container's spec and config (detail)
//	container-names    <pod-id>/<name>_<attempt> → ID
//
// A container's spec and config are most of its bytes and only its status
// reads them; apart from the record, they are not decoded when a
// restarted ketchd loads every record (BenchmarkOpen: 11,000 containers in
// 570 ms with them, 145 ms without). Version 1 kept them in the record.
//
// A record and its name entry are always written and removed in one
// transaction: containerd and CRI-O keep names in memory beside the records,
// which is how "name is reserved" outlives the pod it belonged to.
package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// schemaVersion changes with any change to the layout or to a record's JSON
// that an older ketchd would misread; Open then migrates older files.
const schemaVersion = 2

var (
	metaBucket = []byte("meta")
	versionKey = []byte("version")

	sandboxes  = kind{"sandbox", []byte("sandboxes"), []byte("sandbox-names")}
	containers = kind{"container", []byte("containers"), []byte("container-names")}

	containerDetails = []byte("container-details")
)

// kind names the two buckets of one kind of record.
type kind struct {
	what    string // for error messages
	records []byte // ID → JSON record
	names   []byte // name key → ID
}

// record is what a kind's bucket holds.
type record interface {
	Sandbox | Container
	ident() (id, key string)
}

// Store is ketch's metadata file. It is safe for concurrent use: every
// method is one bbolt transaction, bbolt runs one read-write transaction at
// a time and gives each reader a consistent snapshot. Pods are few: their
// lists decode the memory-mapped file (a few ms for 110 pods, see
// BenchmarkListSandboxes). Containers can be many (a workflow node keeps
// thousands of exited ones until kubelet's GC, and kubelet lists them all
// every second): their lists read an in-memory copy of every record but its
// spec and config, which each container write updates after its transaction
// committed (BenchmarkListPodContainers). A prefix lookup is one cursor
// seek. Callers may change what they are given, but for what listed
// containers point to (labels, annotations, user, result): shared with the
// cache, read-only, as copying them was most of a list's cost.
type Store struct {
	db *bolt.DB

	// write is held across a write's transaction and its cache update,
	// and across a transition and its publishing, so that the caches and
	// the changes published follow commit order.
	write sync.Mutex
	// notify receives every Change (lifecycle.go); guarded by write.
	notify func(Change)
	// rev is the last Rev given a cached container; guarded by write.
	rev uint64
	mu  sync.RWMutex
	// ctrs holds every container record as committed, but for its detail
	// (spec and config: status reads them, through GetContainer); guarded
	// by mu.
	ctrs map[string]*Container
	// pods holds every sandbox record as committed; guarded by mu.
	pods map[string]*Sandbox
}

// Open opens (creating if needed) the metadata file at path.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	// bbolt holds an exclusive flock on the file; without a timeout a second
	// ketchd on the same state would hang in Open instead of failing.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: locked by another process: %w", path, errdefs.ErrUnavailable)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := db.Update(initSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{db: db}
	if err := s.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

// load fills the caches from the file, before any write can run (it sets
// rev unguarded).
func (s *Store) load() error {
	ctrs, pods := map[string]*Container{}, map[string]*Sandbox{}
	err := s.db.View(func(tx *bolt.Tx) error {
		err := each(tx, containers, func(c Container) {
			s.rev++
			c.Rev = s.rev
			ctrs[c.ID] = &c
		})
		if err != nil {
			return err
		}
		return each(tx, sandboxes, func(sb Sandbox) { pods[sb.ID] = &sb })
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.ctrs, s.pods = ctrs, pods
	s.mu.Unlock()
	return nil
}

// Close releases the file; it waits for transactions in flight.
func (s *Store) Close() error {
	return s.db.Close()
}

func initSchema(tx *bolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(metaBucket)
	if err != nil {
		return err
	}
	for _, b := range [][]byte{sandboxes.records, sandboxes.names, containers.records, containers.names, containerDetails} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	want := strconv.Itoa(schemaVersion)
	switch v := string(meta.Get(versionKey)); v {
	case "":
	case "1":
		if err := splitDetails(tx); err != nil {
			return fmt.Errorf("migrate schema version 1: %w", err)
		}
	case want:
		return nil
	default:
		// A newer version is refused: rewriting records this binary does
		// not understand would lose data on a downgrade.
		return fmt.Errorf("schema version %s, this ketchd knows %s: %w", v, want, errdefs.ErrFailedPrecondition)
	}
	return meta.Put(versionKey, []byte(want))
}

// splitDetails moves each container's spec and config out of its version 1
// record, which held them, into container-details.
func splitDetails(tx *bolt.Tx) error {
	records := tx.Bucket(containers.records)
	var ctrs []Container
	err := records.ForEach(func(id, data []byte) error {
		// detail's fields are the only ones named spec and config.
		var v1 struct {
			Container
			detail
		}
		if err := json.Unmarshal(data, &v1); err != nil {
			return fmt.Errorf("container %s: %w", id, err)
		}
		c := v1.Container
		c.Spec, c.Config = v1.detail.Spec, v1.detail.Config
		ctrs = append(ctrs, c)
		return nil
	})
	if err != nil {
		return err
	}
	// A bucket may not change while ForEach walks it.
	for _, c := range ctrs {
		if err := put(tx, containers, c); err != nil {
			return err
		}
	}
	return nil
}

// insert reserves v's name for its ID and writes v. Doing it again for the
// same ID and name changes nothing, so a create can be retried safely:
// wrote tells which happened.
func insert[T record](tx *bolt.Tx, k kind, v T) (wrote bool, _ error) {
	id, key := v.ident()
	if id == "" || key == "" {
		return false, fmt.Errorf("%s needs an ID and a name key: %w", k.what, errdefs.ErrInvalidArgument)
	}
	names, records := tx.Bucket(k.names), tx.Bucket(k.records)
	holder := names.Get([]byte(key))
	switch {
	case holder != nil && string(holder) == id:
		return false, nil
	case holder != nil:
		return false, fmt.Errorf("%s name %q is reserved for %s: %w", k.what, key, holder, errdefs.ErrAlreadyExists)
	case records.Get([]byte(id)) != nil:
		return false, fmt.Errorf("%s %s exists under another name: %w", k.what, id, errdefs.ErrAlreadyExists)
	}
	if err := names.Put([]byte(key), []byte(id)); err != nil {
		return false, err
	}
	return true, put(tx, k, v)
}

// put writes record v, a container's detail apart.
func put[T record](tx *bolt.Tx, k kind, v T) error {
	id, _ := v.ident()
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := tx.Bucket(k.records).Put([]byte(id), data); err != nil {
		return err
	}
	c, ok := any(v).(Container)
	if !ok {
		return nil
	}
	b := tx.Bucket(containerDetails)
	if data, err = json.Marshal(detail{Spec: c.Spec, Config: c.Config}); err != nil {
		return err
	}
	// A transition changes the record, seldom the detail.
	if bytes.Equal(b.Get([]byte(id)), data) {
		return nil
	}
	return b.Put([]byte(id), data)
}

// decode reads record data into v, and a container's detail with it.
func decode[T record](tx *bolt.Tx, data []byte, v *T) error {
	if err := json.Unmarshal(data, v); err != nil {
		return err
	}
	c, ok := any(v).(*Container)
	if !ok {
		return nil
	}
	var d detail
	if raw := tx.Bucket(containerDetails).Get([]byte(c.ID)); raw != nil {
		if err := json.Unmarshal(raw, &d); err != nil {
			return fmt.Errorf("container %s detail: %w", c.ID, err)
		}
	}
	c.Spec, c.Config = d.Spec, d.Config
	return nil
}

// get returns the record whose ID is idOrPrefix or, failing that, the only
// one whose ID starts with it: kubelet and crictl pass truncated IDs.
func get[T record](db *bolt.DB, k kind, idOrPrefix string) (T, error) {
	var v T
	err := db.View(func(tx *bolt.Tx) error {
		_, data, err := lookup(tx.Bucket(k.records), k.what, idOrPrefix)
		if err != nil {
			return err
		}
		return decode(tx, data, &v)
	})
	return v, err
}

func lookup(b *bolt.Bucket, what, idOrPrefix string) (id, data []byte, err error) {
	if idOrPrefix == "" {
		return nil, nil, fmt.Errorf("empty %s ID: %w", what, errdefs.ErrInvalidArgument)
	}
	p := []byte(idOrPrefix)
	c := b.Cursor()
	// Keys are sorted, so an exact match comes first and a second key with
	// the prefix, if any, comes right after.
	id, data = c.Seek(p)
	if id == nil || !bytes.HasPrefix(id, p) {
		return nil, nil, fmt.Errorf("%s %s: %w", what, idOrPrefix, errdefs.ErrNotFound)
	}
	if !bytes.Equal(id, p) {
		if next, _ := c.Next(); next != nil && bytes.HasPrefix(next, p) {
			return nil, nil, fmt.Errorf("%s ID prefix %s is ambiguous: %w", what, idOrPrefix, errdefs.ErrInvalidArgument)
		}
	}
	return id, data, nil
}

// resolve turns a list filter's ID into a full ID; ok is false when nothing
// (or more than one record) matches, so the list is empty, as in containerd
// and CRI-O.
func resolve(b *bolt.Bucket, idOrPrefix string) (id string, ok bool) {
	if idOrPrefix == "" {
		return "", true
	}
	full, _, err := lookup(b, "", idOrPrefix)
	return string(full), err == nil
}

// update rewrites the record id through fn in one transaction; fn's error
// aborts it and is returned as is.
func update[T record](db *bolt.DB, k kind, id string, fn func(*T) error) (T, error) {
	var v T
	err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(k.records)
		data := b.Get([]byte(id))
		if data == nil {
			return fmt.Errorf("%s %s: %w", k.what, id, errdefs.ErrNotFound)
		}
		if err := decode(tx, data, &v); err != nil {
			return err
		}
		id0, key0 := v.ident()
		if err := fn(&v); err != nil {
			return err
		}
		// The name index points at the ID; changing either would orphan it.
		if id1, key1 := v.ident(); id1 != id0 || key1 != key0 {
			return fmt.Errorf("%s %s: ID and name key cannot change: %w", k.what, id, errdefs.ErrInvalidArgument)
		}
		return put(tx, k, v)
	})
	return v, err
}

// remove deletes the record id and frees its name; a missing record is no
// error, so a retried remove succeeds.
func remove[T record](tx *bolt.Tx, k kind, id string) error {
	records, names := tx.Bucket(k.records), tx.Bucket(k.names)
	data := records.Get([]byte(id))
	if data == nil {
		return nil
	}
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	if _, key := v.ident(); string(names.Get([]byte(key))) == id {
		if err := names.Delete([]byte(key)); err != nil {
			return err
		}
	}
	if _, ok := any(v).(Container); ok {
		if err := tx.Bucket(containerDetails).Delete([]byte(id)); err != nil {
			return err
		}
	}
	return records.Delete([]byte(id))
}

// each calls fn with every record of kind k, in ID order.
func each[T record](tx *bolt.Tx, k kind, fn func(T)) error {
	return tx.Bucket(k.records).ForEach(func(_, data []byte) error { return decodeInto(data, fn) })
}

// decodeInto decodes one record, if there is one, and hands it to fn.
func decodeInto[T record](data []byte, fn func(T)) error {
	if data == nil {
		return nil
	}
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	fn(v)
	return nil
}

// matchLabels is the CRI label selector: every pair must be present as is.
func matchLabels(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
