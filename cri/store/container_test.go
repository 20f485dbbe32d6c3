package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

func testContainer(id, podID, name string, attempt uint32) Container {
	return Container{
		ID: id, SandboxID: podID, Name: name, Attempt: attempt,
		Key:         fmt.Sprintf("%s/%s_%d", podID, name, attempt),
		State:       ContainerCreated,
		CreatedAt:   time.Date(2026, 11, 22, 14, 0, 1, 0, time.UTC),
		Image:       "busybox",
		ImageRef:    "sha256:0123",
		Labels:      map[string]string{"c": name},
		Annotations: map[string]string{},
		LogPath:     "/var/log/pods/x/" + name + "/0.log",
		Config:      []byte("cfg"),
	}
}

func TestCreateContainer(t *testing.T) {
	tests := []struct {
		desc     string
		first    []Container
		create   Container
		want     error
		mentions string
	}{
		{desc: "new", create: testContainer("c1", "pod1", "web", 0)},
		{desc: "same name in the pod", first: []Container{testContainer("c1", "pod1", "web", 0)},
			create: testContainer("c2", "pod1", "web", 0), want: errdefs.ErrAlreadyExists, mentions: "reserved for c1"},
		{desc: "same name, next attempt", first: []Container{testContainer("c1", "pod1", "web", 0)},
			create: testContainer("c2", "pod1", "web", 1)},
		{desc: "same name in another pod", first: []Container{testContainer("c1", "pod1", "web", 0)},
			create: testContainer("c2", "pod2", "web", 0)},
		{desc: "same ID and name again", first: []Container{testContainer("c1", "pod1", "web", 0)},
			create: testContainer("c1", "pod1", "web", 0)},
		{desc: "unknown pod", create: testContainer("c1", "nopod", "web", 0),
			want: errdefs.ErrNotFound, mentions: "nopod"},
		{desc: "pod not ready", create: testContainer("c1", "pod3", "web", 0),
			want: errdefs.ErrFailedPrecondition, mentions: "creating"},
		{desc: "key outside its pod", create: func() Container {
			c := testContainer("c1", "pod1", "web", 0)
			c.Key = "pod2/web_0"
			return c
		}(), want: errdefs.ErrInvalidArgument, mentions: "pod2/web_0"},
		{desc: "no pod", create: testContainer("c1", "", "web", 0), want: errdefs.ErrInvalidArgument, mentions: "pod ID"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			s, _ := newStore(t)
			mustCreate(t, s, readySandbox("pod1", "k1"), readySandbox("pod2", "k2"), testSandbox("pod3", "k3"))
			for _, c := range tc.first {
				if err := s.CreateContainer(c); err != nil {
					t.Fatal(err)
				}
			}
			wantErr(t, s.CreateContainer(tc.create), tc.want, tc.mentions)
			if tc.want == nil {
				if got, err := s.GetContainer(tc.create.ID); err != nil || !reflect.DeepEqual(got, tc.create) {
					t.Fatalf("GetContainer = %+v, %v; want %+v", got, err, tc.create)
				}
			}
		})
	}
}

func TestContainerLifecycle(t *testing.T) {
	s, _ := newStore(t)
	mustCreate(t, s, readySandbox("pod1", "k1"))
	c := testContainer("c1", "pod1", "web", 0)
	if err := s.CreateContainer(c); err != nil {
		t.Fatal(err)
	}

	got, err := s.UpdateContainer("c1", func(c *Container) error {
		c.State, c.ExitCode, c.Reason = ContainerExited, 137, "OOMKilled"
		return nil
	})
	if err != nil || got.State != ContainerExited || got.ExitCode != 137 {
		t.Fatalf("UpdateContainer = %+v, %v", got, err)
	}
	if _, err := s.UpdateContainer("c1", func(c *Container) error { c.Key = "pod1/x_0"; return nil }); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("changing the key: %v, want InvalidArgument", err)
	}

	// The pod's record stays while it has containers: theirs would point at nothing.
	wantErr(t, s.DeleteSandbox("pod1"), errdefs.ErrFailedPrecondition, "c1")
	for range 2 {
		if err := s.DeleteContainer("c1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateContainer(testContainer("c2", "pod1", "web", 0)); err != nil {
		t.Fatalf("name not freed by delete: %v", err)
	}
	if err := s.DeleteContainer("c2"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSandbox("pod1"); err != nil {
		t.Fatal(err)
	}
}

func TestListContainers(t *testing.T) {
	s, _ := newStore(t)
	mustCreate(t, s, readySandbox("pod1", "k1"), readySandbox("pod2", "k2"), readySandbox("qod3", "k3"))
	a, b, c := testContainer("ca1", "pod1", "web", 0), testContainer("ca2", "pod1", "log", 0), testContainer("cb1", "qod3", "web", 0)
	b.State = ContainerRunning
	for _, ctr := range []Container{a, b, c} {
		if err := s.CreateContainer(ctr); err != nil {
			t.Fatal(err)
		}
	}
	created, running, exited := ContainerCreated, ContainerRunning, ContainerExited

	tests := []struct {
		desc   string
		filter ContainerFilter
		want   []string
	}{
		{desc: "everything", want: []string{"ca1", "ca2", "cb1"}},
		{desc: "ID prefix", filter: ContainerFilter{ID: "cb"}, want: []string{"cb1"}},
		{desc: "ambiguous ID prefix", filter: ContainerFilter{ID: "ca"}},
		{desc: "pod", filter: ContainerFilter{SandboxID: "pod1"}, want: []string{"ca1", "ca2"}},
		{desc: "pod prefix", filter: ContainerFilter{SandboxID: "q"}, want: []string{"cb1"}},
		{desc: "ambiguous pod prefix", filter: ContainerFilter{SandboxID: "pod"}},
		{desc: "pod without containers", filter: ContainerFilter{SandboxID: "pod2"}},
		{desc: "unknown pod", filter: ContainerFilter{SandboxID: "zzz"}},
		{desc: "created", filter: ContainerFilter{State: &created}, want: []string{"ca1", "cb1"}},
		{desc: "running in pod1", filter: ContainerFilter{SandboxID: "pod1", State: &running}, want: []string{"ca2"}},
		{desc: "exited", filter: ContainerFilter{State: &exited}},
		{desc: "label", filter: ContainerFilter{LabelSelector: map[string]string{"c": "web"}}, want: []string{"ca1", "cb1"}},
		{desc: "ID in its pod", filter: ContainerFilter{ID: "ca1", SandboxID: "pod1"}, want: []string{"ca1"}},
		{desc: "ID in another pod", filter: ContainerFilter{ID: "ca1", SandboxID: "qod3"}},
		{desc: "label and pod", filter: ContainerFilter{SandboxID: "qod3", LabelSelector: map[string]string{"c": "log"}}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			list, err := s.ListContainers(tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, c := range list {
				ids = append(ids, c.ID)
			}
			if !reflect.DeepEqual(ids, tc.want) {
				t.Fatalf("ids = %v, want %v", ids, tc.want)
			}
		})
	}
}

// BenchmarkListSandboxes lists a full node (kubelet's default limit of 110
// pods, 2 KiB configs). The store decodes every record per list instead of
// keeping an in-memory index; if this grows past what kubelet's relist every
// second can afford, that choice should change.
func BenchmarkListSandboxes(b *testing.B) {
	s, err := Open(b.TempDir() + "/cri.db")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i := range 110 {
		sb := testSandbox(fmt.Sprintf("%064x", i), fmt.Sprintf("pod-%d_default_uid_0", i))
		sb.Config = make([]byte, 2048)
		if err := s.CreateSandbox(sb); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if list, err := s.ListSandboxes(SandboxFilter{}); err != nil || len(list) != 110 {
			b.Fatal(len(list), err)
		}
	}
}

// benchSpec is the size and shape of a container's runtime spec without a
// seccomp profile (~3 KiB).
var benchSpec = func() json.RawMessage {
	m := `{"destination":"/proc","type":"proc","source":"proc","options":["nosuid","noexec","nodev"]}`
	return json.RawMessage(`{"ociVersion":"1.2.0","mounts":[` + strings.Repeat(m+",", 32) + m + `]}`)
}()

// fillContainers writes pods pods of perPod containers each, as kubelet's
// would be (2 KiB configs, 3 KiB specs), around the cache for speed.
func fillContainers(b *testing.B, s *Store, pods, perPod int) {
	for p := range pods {
		pod := fmt.Sprintf("%064x", p)
		sb := testSandbox(pod, fmt.Sprintf("pod-%d_default_uid_0", p))
		sb.State = SandboxReady
		if err := s.CreateSandbox(sb); err != nil {
			b.Fatal(err)
		}
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i := range perPod {
				c := testContainer(fmt.Sprintf("%032x%032x", p, i), pod, fmt.Sprintf("step-%d", i), 0)
				c.Config, c.Spec = make([]byte, 2048), benchSpec
				if _, err := insert(tx, containers, c); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := s.load(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkListPodContainers lists one pod's 1,000 containers on a node
// holding 10,000 (a workflow node before kubelet's GC), as the stats and
// metrics of every pod do.
func BenchmarkListPodContainers(b *testing.B) {
	s, err := Open(b.TempDir() + "/cri.db")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const pods, perPod = 10, 1000
	fillContainers(b, s, pods, perPod)
	pod := fmt.Sprintf("%064x", 3)
	b.Run("one pod", func(b *testing.B) {
		for b.Loop() {
			if list, err := s.ListContainers(ContainerFilter{SandboxID: pod}); err != nil || len(list) != perPod {
				b.Fatal(len(list), err)
			}
		}
	})
	// kubelet's relist, every second.
	b.Run("all", func(b *testing.B) {
		for b.Loop() {
			if list, err := s.ListContainers(ContainerFilter{}); err != nil || len(list) != pods*perPod {
				b.Fatal(len(list), err)
			}
		}
	})
}

// BenchmarkOpen opens the file of a node with 1,000 pods and 11,000
// containers, as a restarted ketchd does before it serves.
func BenchmarkOpen(b *testing.B) {
	path := b.TempDir() + "/cri.db"
	s, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	fillContainers(b, s, 1000, 11)
	s.Close()
	for b.Loop() {
		s, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}

// TestContainerListCache: lists come from memory, in step with every
// write, as committed, without the runtime spec, and the same after a
// reopen.
func TestContainerListCache(t *testing.T) {
	s, path := newStore(t)
	mustCreate(t, s, readySandbox("pod1", "k1"))
	c := testContainer("ca1", "pod1", "web", 0)
	c.Spec = []byte(`{"ociVersion":"1.2.0"}`)
	if err := s.CreateContainer(c); err != nil {
		t.Fatal(err)
	}
	// A retried create of the same ID and name keeps the record as is.
	again := c
	again.Image = "changed"
	if err := s.CreateContainer(again); err != nil {
		t.Fatal(err)
	}
	list, _ := s.ListContainers(ContainerFilter{})
	if len(list) != 1 || list[0].Image != "busybox" || list[0].Spec != nil {
		t.Fatalf("list = %+v, want the first record, without its spec", list)
	}
	c.Labels["c"] = "mutated" // by the creator, after the create
	if got, _ := s.GetContainer("ca1"); string(got.Spec) != string(c.Spec) || got.Labels["c"] != "web" {
		t.Errorf("get = %+v: want the spec, and labels as created", got)
	}
	if list, _ := s.ListContainers(ContainerFilter{}); list[0].Labels["c"] != "web" {
		t.Errorf("listed labels %v, want them as created", list[0].Labels)
	}
	if _, err := s.UpdateContainer("ca1", func(c *Container) error { c.State = ContainerRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateContainer("ca1", func(c *Container) error { c.State = ContainerExited; return errors.New("refused") }); err == nil {
		t.Fatal("a refused update succeeded")
	}
	running := ContainerRunning
	if list, _ := s.ListContainers(ContainerFilter{State: &running}); len(list) != 1 || list[0].Labels["c"] != "web" {
		t.Errorf("running = %+v, want ca1 as updated, not as refused", list)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, path)
	if list, _ := s.ListContainers(ContainerFilter{State: &running}); len(list) != 1 {
		t.Errorf("after a reopen: %+v", list)
	}
	if err := s.DeleteContainer("ca1"); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.ListContainers(ContainerFilter{}); len(list) != 0 {
		t.Errorf("after delete: %+v", list)
	}
}
