package store

import (
	"bytes"
	"encoding/base64"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

func openStore(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newStore(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state", "cri.db")
	return openStore(t, path), path
}

func testSandbox(id, key string) Sandbox {
	return Sandbox{
		ID: id, Name: "web", Namespace: "default", UID: "uid-1", Attempt: 0, Key: key,
		State:          SandboxCreating,
		CreatedAt:      time.Date(2026, 11, 22, 14, 0, 0, 123456789, time.UTC),
		Labels:         map[string]string{"app": "web"},
		Annotations:    map[string]string{"a": "b"},
		RuntimeHandler: "runc",
		NetNSPath:      "/run/ketch/netns/" + id,
		IPs:            []string{"10.88.0.2"},
		PID:            1234,
		LogDirectory:   "/var/log/pods/x",
		Config:         []byte{0x0a, 0x03, 'w', 'e', 'b'},
	}
}

// readySandbox is testSandbox once RunPodSandbox has finished: ready for
// containers.
func readySandbox(id, key string) Sandbox {
	sb := testSandbox(id, key)
	sb.State = SandboxReady
	return sb
}

func mustCreate(t *testing.T, s *Store, sbs ...Sandbox) {
	t.Helper()
	for _, sb := range sbs {
		if err := s.CreateSandbox(sb); err != nil {
			t.Fatalf("CreateSandbox(%s): %v", sb.ID, err)
		}
	}
}

func wantErr(t *testing.T, err, want error, mentions string) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("err = %v, want nil", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
	if !strings.Contains(err.Error(), mentions) {
		t.Fatalf("err = %q, want it to mention %q", err, mentions)
	}
}

func TestSandboxRoundTrip(t *testing.T) {
	s, _ := newStore(t)
	sb := testSandbox("aaa111", "web_default_uid-1_0")
	mustCreate(t, s, sb)

	got, err := s.GetSandbox(sb.ID)
	if err != nil || !reflect.DeepEqual(got, sb) {
		t.Fatalf("GetSandbox = %+v, %v; want %+v", got, err, sb)
	}
	list, err := s.ListSandboxes(SandboxFilter{})
	if err != nil || !reflect.DeepEqual(list, []Sandbox{sb}) {
		t.Fatalf("ListSandboxes = %+v, %v", list, err)
	}
	if err := s.DeleteSandbox(sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSandbox(sb.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("GetSandbox after delete: %v, want NotFound", err)
	}
}

func TestCreateSandbox(t *testing.T) {
	const key = "web_default_uid-1_0"
	tests := []struct {
		desc     string
		first    []Sandbox // created before, must succeed
		deleted  string    // deleted before
		create   Sandbox
		want     error
		mentions string
	}{
		{desc: "new name", create: testSandbox("aaa", key)},
		{desc: "name held by another ID", first: []Sandbox{testSandbox("aaa", key)},
			create: testSandbox("bbb", key), want: errdefs.ErrAlreadyExists, mentions: "reserved for aaa"},
		{desc: "same ID and name again", first: []Sandbox{testSandbox("aaa", key)},
			create: testSandbox("aaa", key)},
		{desc: "same ID under another name", first: []Sandbox{testSandbox("aaa", key)},
			create: testSandbox("aaa", "web_default_uid-1_1"), want: errdefs.ErrAlreadyExists, mentions: "aaa"},
		{desc: "name free after delete", first: []Sandbox{testSandbox("aaa", key)}, deleted: "aaa",
			create: testSandbox("bbb", key)},
		{desc: "other attempt is another name", first: []Sandbox{testSandbox("aaa", key)},
			create: testSandbox("bbb", "web_default_uid-1_1")},
		{desc: "no ID", create: testSandbox("", key), want: errdefs.ErrInvalidArgument, mentions: "ID"},
		{desc: "no name key", create: testSandbox("aaa", ""), want: errdefs.ErrInvalidArgument, mentions: "name key"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			s, _ := newStore(t)
			mustCreate(t, s, tc.first...)
			if tc.deleted != "" {
				if err := s.DeleteSandbox(tc.deleted); err != nil {
					t.Fatal(err)
				}
			}
			wantErr(t, s.CreateSandbox(tc.create), tc.want, tc.mentions)
			if tc.want != nil {
				return
			}
			if _, err := s.GetSandbox(tc.create.ID); err != nil {
				t.Fatalf("created sandbox not found: %v", err)
			}
		})
	}
}

func TestDeleteSandboxIdempotent(t *testing.T) {
	s, _ := newStore(t)
	mustCreate(t, s, testSandbox("aaa", "k"))
	for i, id := range []string{"aaa", "aaa", "never-existed"} {
		if err := s.DeleteSandbox(id); err != nil {
			t.Fatalf("delete %d (%s): %v", i, id, err)
		}
	}
	if list, _ := s.ListSandboxes(SandboxFilter{}); len(list) != 0 {
		t.Fatalf("left after delete: %+v", list)
	}
}

func TestGetSandboxPrefix(t *testing.T) {
	s, _ := newStore(t)
	mustCreate(t, s, testSandbox("abc123", "k1"), testSandbox("abd456", "k2"), testSandbox("abd4567", "k3"))
	tests := []struct {
		desc, query, wantID string
		want                error
	}{
		{desc: "full ID", query: "abc123", wantID: "abc123"},
		{desc: "unique prefix", query: "abc", wantID: "abc123"},
		{desc: "full ID that is also a prefix of another", query: "abd456", wantID: "abd456"},
		{desc: "ambiguous prefix", query: "ab", want: errdefs.ErrInvalidArgument},
		{desc: "ambiguous longer prefix", query: "abd4", want: errdefs.ErrInvalidArgument},
		{desc: "missing", query: "zzz", want: errdefs.ErrNotFound},
		{desc: "missing, sorts between", query: "abc2", want: errdefs.ErrNotFound},
		{desc: "empty", query: "", want: errdefs.ErrInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := s.GetSandbox(tc.query)
			wantErr(t, err, tc.want, tc.query)
			if got.ID != tc.wantID {
				t.Fatalf("GetSandbox(%q).ID = %q, want %q", tc.query, got.ID, tc.wantID)
			}
		})
	}
}

func TestListSandboxes(t *testing.T) {
	s, _ := newStore(t)
	a, b, c := testSandbox("aa1", "k1"), testSandbox("aa2", "k2"), testSandbox("bb1", "k3")
	a.State, b.State, c.State = SandboxReady, SandboxNotReady, SandboxReady
	c.Labels = map[string]string{"app": "db", "tier": "back"}
	mustCreate(t, s, a, b, c)
	ready, notReady, creating := SandboxReady, SandboxNotReady, SandboxCreating

	tests := []struct {
		desc   string
		filter SandboxFilter
		want   []string
	}{
		{desc: "everything", want: []string{"aa1", "aa2", "bb1"}},
		{desc: "full ID", filter: SandboxFilter{ID: "aa2"}, want: []string{"aa2"}},
		{desc: "unique prefix", filter: SandboxFilter{ID: "b"}, want: []string{"bb1"}},
		{desc: "ambiguous prefix selects nothing", filter: SandboxFilter{ID: "aa"}},
		{desc: "missing ID", filter: SandboxFilter{ID: "zz"}},
		{desc: "ready", filter: SandboxFilter{State: &ready}, want: []string{"aa1", "bb1"}},
		{desc: "not ready", filter: SandboxFilter{State: &notReady}, want: []string{"aa2"}},
		{desc: "creating", filter: SandboxFilter{State: &creating}},
		{desc: "one label", filter: SandboxFilter{LabelSelector: map[string]string{"app": "web"}}, want: []string{"aa1", "aa2"}},
		{desc: "all labels must match", filter: SandboxFilter{LabelSelector: map[string]string{"app": "db", "tier": "front"}}},
		{desc: "two labels", filter: SandboxFilter{LabelSelector: map[string]string{"app": "db", "tier": "back"}}, want: []string{"bb1"}},
		{desc: "absent label key", filter: SandboxFilter{LabelSelector: map[string]string{"zone": ""}}},
		{desc: "empty selector", filter: SandboxFilter{LabelSelector: map[string]string{}}, want: []string{"aa1", "aa2", "bb1"}},
		{desc: "ID and state", filter: SandboxFilter{ID: "aa1", State: &notReady}},
		{desc: "state and label", filter: SandboxFilter{State: &ready, LabelSelector: map[string]string{"app": "web"}}, want: []string{"aa1"}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			list, err := s.ListSandboxes(tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, sb := range list {
				ids = append(ids, sb.ID)
			}
			if !reflect.DeepEqual(ids, tc.want) {
				t.Fatalf("ids = %v, want %v", ids, tc.want)
			}
		})
	}
}

func TestUpdateSandbox(t *testing.T) {
	errStep := errors.New("step failed")
	tests := []struct {
		desc     string
		id       string
		fn       func(*Sandbox) error
		want     error
		mentions string
		check    func(*testing.T, Sandbox)
	}{
		{desc: "ready with IPs", id: "aaa", fn: func(sb *Sandbox) error {
			sb.State, sb.IPs, sb.PID = SandboxReady, []string{"10.0.0.9", "fd00::9"}, 42
			return nil
		}, check: func(t *testing.T, sb Sandbox) {
			if sb.State != SandboxReady || sb.PID != 42 || len(sb.IPs) != 2 {
				t.Fatalf("not updated: %+v", sb)
			}
		}},
		{desc: "fn error keeps the record", id: "aaa", fn: func(sb *Sandbox) error {
			sb.State = SandboxReady
			return errStep
		}, want: errStep, mentions: "step failed", check: func(t *testing.T, sb Sandbox) {
			if sb.State != SandboxCreating {
				t.Fatalf("state = %s, want creating", sb.State)
			}
		}},
		{desc: "key is fixed", id: "aaa", fn: func(sb *Sandbox) error { sb.Key = "other"; return nil },
			want: errdefs.ErrInvalidArgument, mentions: "aaa"},
		{desc: "ID is fixed", id: "aaa", fn: func(sb *Sandbox) error { sb.ID = "bbb"; return nil },
			want: errdefs.ErrInvalidArgument, mentions: "aaa"},
		{desc: "missing", id: "zzz", fn: func(*Sandbox) error { return nil },
			want: errdefs.ErrNotFound, mentions: "zzz"},
		{desc: "prefix is not enough", id: "aa", fn: func(*Sandbox) error { return nil },
			want: errdefs.ErrNotFound, mentions: "aa"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			s, _ := newStore(t)
			mustCreate(t, s, testSandbox("aaa", "k"))
			got, err := s.UpdateSandbox(tc.id, tc.fn)
			wantErr(t, err, tc.want, tc.mentions)
			stored, err := s.GetSandbox("aaa")
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil && !reflect.DeepEqual(got, stored) {
				t.Fatalf("returned %+v, stored %+v", got, stored)
			}
			if list, _ := s.ListSandboxes(SandboxFilter{}); len(list) != 1 || !reflect.DeepEqual(list[0], stored) {
				t.Fatalf("listed %+v, stored %+v", list, stored)
			}
			if tc.check != nil {
				tc.check(t, stored)
			}
		})
	}
}

// TestSandboxListFollowsWrites: ListSandboxes answers from a cache, which
// every write, a reopen and a delete keep equal to the file.
func TestSandboxListFollowsWrites(t *testing.T) {
	s, path := newStore(t)
	same := func(when string) {
		t.Helper()
		list, err := s.ListSandboxes(SandboxFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var stored []Sandbox
		if err := s.db.View(func(tx *bolt.Tx) error {
			return each(tx, sandboxes, func(sb Sandbox) { stored = append(stored, sb) })
		}); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(list, stored) {
			t.Errorf("%s: listed %+v, stored %+v", when, list, stored)
		}
	}
	sb, other := testSandbox("aaa", "k1"), testSandbox("bbb", "k2")
	mustCreate(t, s, sb, other)
	sb.Labels["app"] = "mutated" // by the creator, after the create
	again := testSandbox("aaa", "k1")
	again.Name = "changed"
	if err := s.CreateSandbox(again); err != nil {
		t.Fatal(err)
	}
	same("created, the create retried")
	if err := s.SandboxReady("aaa", 7, "/run/ketch/netns/aaa", []string{"10.0.0.7"}); err != nil {
		t.Fatal(err)
	}
	same("ready")
	if _, err := s.UpdateSandbox("aaa", func(sb *Sandbox) error { sb.Resources = []byte(`{}`); return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateSandbox("aaa", func(sb *Sandbox) error { sb.PID = 1; return errors.New("refused") }); err == nil {
		t.Fatal("a refused update succeeded")
	}
	same("updated, an update refused")
	if _, err := s.SandboxNotReady("aaa", true); err != nil {
		t.Fatal(err)
	}
	same("not ready, removing")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, path)
	same("reopened")
	if err := s.DeleteSandbox("aaa"); err != nil {
		t.Fatal(err)
	}
	same("deleted")
	if list, _ := s.ListSandboxes(SandboxFilter{}); len(list) != 1 || list[0].ID != "bbb" {
		t.Errorf("after a delete: %+v", list)
	}
}

func TestPersistence(t *testing.T) {
	s, path := newStore(t)
	sb := testSandbox("aaa", "k")
	mustCreate(t, s, sb)
	sb, err := s.UpdateSandbox("aaa", func(sb *Sandbox) error { sb.State = SandboxReady; return nil })
	if err != nil {
		t.Fatal(err)
	}
	ctr := testContainer("c1", "aaa", "web", 0)
	if err := s.CreateContainer(ctr); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, path)
	if got, err := s.GetSandbox("aaa"); err != nil || !reflect.DeepEqual(got, sb) {
		t.Fatalf("after reopen: %+v, %v; want %+v", got, err, sb)
	}
	if got, err := s.GetContainer("c1"); err != nil || !reflect.DeepEqual(got, ctr) {
		t.Fatalf("after reopen: %+v, %v; want %+v", got, err, ctr)
	}
	wantErr(t, s.CreateSandbox(testSandbox("bbb", "k")), errdefs.ErrAlreadyExists, "reserved for aaa")
	wantErr(t, s.CreateContainer(testContainer("c2", "aaa", "web", 0)), errdefs.ErrAlreadyExists, "reserved for c1")
}

func TestConcurrentCreateSameName(t *testing.T) {
	s, _ := newStore(t)
	const n = 20
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = s.CreateSandbox(testSandbox(string(rune('a'+i))+"-id", "web_default_uid-1_0")) })
	}
	wg.Wait()

	list, err := s.ListSandboxes(SandboxFilter{})
	if err != nil || len(list) != 1 {
		t.Fatalf("stored %d sandboxes (%v), want 1", len(list), err)
	}
	winner := list[0].ID
	wins := 0
	for _, err := range errs {
		if err == nil {
			wins++
			continue
		}
		wantErr(t, err, errdefs.ErrAlreadyExists, "reserved for "+winner)
	}
	if wins != 1 {
		t.Fatalf("%d creates won, want 1", wins)
	}
}

func TestOpen(t *testing.T) {
	t.Run("newer schema is refused", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "cri.db")
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket(metaBucket)
			if err != nil {
				return err
			}
			return b.Put(versionKey, []byte("99"))
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		_, err = Open(path)
		wantErr(t, err, errdefs.ErrFailedPrecondition, "99")
	})
	// A version 1 file, as the ketchd before it wrote one: a container's
	// spec and config in its record.
	t.Run("version 1 is migrated", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "cri.db")
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		v1 := `{"id":"c1","sandbox_id":"pod1","name":"web","key":"pod1/web_0","state":"exited","labels":{"c":"web"},` +
			`"spec":{"ociVersion":"1.2.0"},"config":"` + base64.StdEncoding.EncodeToString([]byte("cfg")) + `"}`
		err = db.Update(func(tx *bolt.Tx) error {
			for _, b := range [][]byte{metaBucket, sandboxes.records, sandboxes.names, containers.records, containers.names} {
				if _, err := tx.CreateBucket(b); err != nil {
					return err
				}
			}
			return errors.Join(tx.Bucket(metaBucket).Put(versionKey, []byte("1")),
				tx.Bucket(containers.records).Put([]byte("c1"), []byte(v1)),
				tx.Bucket(containers.names).Put([]byte("pod1/web_0"), []byte("c1")))
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		s, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		got, err := s.GetContainer("c1")
		if err != nil || string(got.Spec) != `{"ociVersion":"1.2.0"}` || string(got.Config) != "cfg" || got.State != ContainerExited || got.Labels["c"] != "web" {
			t.Fatalf("migrated container: %+v, %v", got, err)
		}
		if list, err := s.ListContainers(ContainerFilter{}); err != nil || len(list) != 1 || list[0].Name != "web" || list[0].Spec != nil || list[0].Config != nil {
			t.Fatalf("listed after the migration: %+v, %v", list, err)
		}
		err = s.db.View(func(tx *bolt.Tx) error {
			if v := tx.Bucket(metaBucket).Get(versionKey); string(v) != "2" {
				t.Errorf("version %s, want 2", v)
			}
			if rec := tx.Bucket(containers.records).Get([]byte("c1")); bytes.Contains(rec, []byte("ociVersion")) {
				t.Errorf("the record still holds the spec: %s", rec)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// A transition keeps the detail; a removal takes it.
		if _, err := s.UpdateContainer("c1", func(c *Container) error { c.Reason = "Completed"; return nil }); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetContainer("c1"); err != nil || string(got.Config) != "cfg" || got.Reason != "Completed" {
			t.Fatalf("after an update: %+v, %v", got, err)
		}
		if err := s.DeleteContainer("c1"); err != nil {
			t.Fatal(err)
		}
		_ = s.db.View(func(tx *bolt.Tx) error {
			if n := tx.Bucket(containerDetails).Stats().KeyN; n != 0 {
				t.Errorf("%d details left after the container's removal", n)
			}
			return nil
		})
	})
	t.Run("file held by another store", func(t *testing.T) {
		_, path := newStore(t)
		_, err := Open(path)
		wantErr(t, err, errdefs.ErrUnavailable, "locked")
	})
}
