package store

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// Every container state × every transition: what it becomes, whether the
// transition says it changed anything, what it publishes, and which are
// refused.
func TestContainerTransitions(t *testing.T) {
	at := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	exit := Exit{Code: 3, At: at, Reason: "Error", Message: "m", Result: []byte("r")}
	transitions := map[string]func(s *Store) (bool, error){
		"created": func(s *Store) (bool, error) {
			return true, s.ContainerCreated("c1", User{UID: 7}, []byte(`{}`), "/kubepods/c1")
		},
		"started": func(s *Store) (bool, error) { return s.ContainerStarted("c1", 42, at) },
		"exited": func(s *Store) (bool, error) {
			_, changed, err := s.ContainerExited("c1", exit)
			return changed, err
		},
		"removing": func(s *Store) (bool, error) {
			c, err := s.ContainerRemoving("c1")
			return c.Removing, err
		},
	}
	const refused = "refused"
	for _, tc := range []struct {
		from ContainerState
		// per transition: the state it leaves, or refused; and whether
		// it changed the record
		want map[string]ContainerState
		same map[string]bool // transitions that change nothing
	}{
		{from: ContainerCreating,
			want: map[string]ContainerState{"created": ContainerCreated, "started": refused, "exited": refused, "removing": ContainerCreating}},
		{from: ContainerCreated,
			want: map[string]ContainerState{"created": refused, "started": ContainerRunning, "exited": ContainerExited, "removing": ContainerCreated}},
		{from: ContainerRunning,
			want: map[string]ContainerState{"created": refused, "started": ContainerRunning, "exited": ContainerExited, "removing": ContainerRunning},
			same: map[string]bool{"started": true}},
		{from: ContainerExited,
			want: map[string]ContainerState{"created": refused, "started": refused, "exited": ContainerExited, "removing": ContainerExited},
			same: map[string]bool{"exited": true}},
	} {
		for name, tr := range transitions {
			t.Run(fmt.Sprintf("%s/%s", tc.from, name), func(t *testing.T) {
				s, _ := newStore(t)
				mustCreate(t, s, readySandbox("pod1", "k1"))
				c := testContainer("c1", "pod1", "web", 0)
				c.State, c.WantResult = tc.from, true
				if err := s.CreateContainer(c); err != nil {
					t.Fatal(err)
				}
				var got []Change
				s.Notify(func(c Change) { got = append(got, c) })
				changed, err := tr(s)
				rec, gerr := s.GetContainer("c1")
				if gerr != nil {
					t.Fatal(gerr)
				}
				want := tc.want[name]
				if want == refused {
					if !errdefs.IsFailedPrecondition(err) {
						t.Errorf("err = %v, want FailedPrecondition", err)
					}
					if rec.State != tc.from || len(got) != 0 {
						t.Errorf("refused, yet the record is %s and %v was published", rec.State, got)
					}
					return
				}
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				if rec.State != want {
					t.Errorf("state %s, want %s", rec.State, want)
				}
				if changed == tc.same[name] {
					t.Errorf("changed = %v, want %v", changed, !tc.same[name])
				}
				wantKind := map[string]ChangeKind{"created": Created, "started": Started, "exited": Stopped}[name]
				switch {
				case tc.same[name] || wantKind == 0:
					if len(got) != 0 {
						t.Errorf("published %v, want nothing", got)
					}
				case len(got) != 1 || got[0] != (Change{PodID: "pod1", ID: "c1", Kind: wantKind}):
					t.Errorf("published %v, want one %v", got, wantKind)
				}
				// What each transition writes, and keeps.
				switch {
				case name == "started" && !tc.same[name]:
					if rec.PID != 42 || !rec.StartedAt.Equal(at) {
						t.Errorf("started: pid %d at %v", rec.PID, rec.StartedAt)
					}
				case name == "exited" && !tc.same[name]:
					if rec.ExitCode != 3 || rec.Reason != "Error" || rec.Message != "m" || string(rec.Result) != "r" || !rec.FinishedAt.Equal(at) {
						t.Errorf("exited: %+v", rec)
					}
				case name == "created":
					if rec.User == nil || rec.User.UID != 7 || string(rec.Spec) != "{}" || rec.CgroupsPath != "/kubepods/c1" {
						t.Errorf("created: user %v, spec %s, cgroups path %q", rec.User, rec.Spec, rec.CgroupsPath)
					}
				case name == "removing":
					if !rec.Removing {
						t.Error("not marked removing")
					}
				}
			})
		}
	}
}

// A container that does not want its result keeps none; a second exit
// does not replace the first.
func TestContainerExitedKeepsTheFirst(t *testing.T) {
	s, _ := newStore(t)
	mustCreate(t, s, readySandbox("pod1", "k1"))
	c := testContainer("c1", "pod1", "web", 0)
	c.State = ContainerRunning
	if err := s.CreateContainer(c); err != nil {
		t.Fatal(err)
	}
	if _, changed, err := s.ContainerExited("c1", Exit{Code: 1, Result: []byte("x")}); err != nil || !changed {
		t.Fatalf("first exit: %v, changed %v", err, changed)
	}
	rec, changed, err := s.ContainerExited("c1", Exit{Code: 2})
	if err != nil || changed || rec.ExitCode != 1 || rec.Result != nil {
		t.Errorf("second exit: %v, changed %v, code %d, result %q; want the first kept, no result", err, changed, rec.ExitCode, rec.Result)
	}
	if _, _, err := s.ContainerExited("nope", Exit{}); !errdefs.IsNotFound(err) {
		t.Errorf("unknown container: %v, want NotFound", err)
	}
}

// Every pod state × every transition.
func TestSandboxTransitions(t *testing.T) {
	type result struct {
		state    SandboxState
		removing bool
		changed  bool // what the transition reports: ready → not ready
		events   []ChangeKind
	}
	const refused SandboxState = "refused"
	for _, tc := range []struct {
		from     SandboxState
		removing bool
		ready    result
		stop     result // SandboxNotReady(id, false)
		remove   result // SandboxNotReady(id, true)
	}{
		{from: SandboxCreating,
			ready:  result{state: SandboxReady, events: []ChangeKind{Created, Started}},
			stop:   result{state: SandboxNotReady},
			remove: result{state: SandboxCreating, removing: true}},
		{from: SandboxReady,
			ready:  result{state: refused},
			stop:   result{state: SandboxNotReady, changed: true, events: []ChangeKind{Stopped}},
			remove: result{state: SandboxNotReady, removing: true, changed: true, events: []ChangeKind{Stopped}}},
		{from: SandboxNotReady,
			ready:  result{state: refused},
			stop:   result{state: SandboxNotReady},
			remove: result{state: SandboxNotReady, removing: true}},
		{from: SandboxNotReady, removing: true,
			ready:  result{state: refused},
			stop:   result{state: SandboxNotReady, removing: true},
			remove: result{state: SandboxNotReady, removing: true}},
	} {
		for name, want := range map[string]result{"ready": tc.ready, "stop": tc.stop, "remove": tc.remove} {
			t.Run(fmt.Sprintf("%s,removing=%v/%s", tc.from, tc.removing, name), func(t *testing.T) {
				s, _ := newStore(t)
				sb := testSandbox("pod1", "k1")
				sb.State, sb.Removing = tc.from, tc.removing
				mustCreate(t, s, sb)
				var kinds []ChangeKind
				s.Notify(func(c Change) {
					if c.PodID != "pod1" || c.ID != "pod1" {
						t.Errorf("change %+v is not about pod1", c)
					}
					kinds = append(kinds, c.Kind)
				})
				var changed bool
				var err error
				switch name {
				case "ready":
					err = s.SandboxReady("pod1", 9, "/ns", []string{"10.0.0.9"})
				case "stop":
					changed, err = s.SandboxNotReady("pod1", false)
				case "remove":
					changed, err = s.SandboxNotReady("pod1", true)
				}
				rec, gerr := s.GetSandbox("pod1")
				if gerr != nil {
					t.Fatal(gerr)
				}
				if want.state == refused {
					if !errdefs.IsFailedPrecondition(err) || rec.State != tc.from || len(kinds) != 0 {
						t.Errorf("err %v, state %s, published %v; want FailedPrecondition and nothing changed", err, rec.State, kinds)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if rec.State != want.state || rec.Removing != want.removing || changed != want.changed || !slices.Equal(kinds, want.events) {
					t.Errorf("state %s removing %v changed %v published %v; want %+v", rec.State, rec.Removing, changed, kinds, want)
				}
				if name == "ready" && (rec.PID != 9 || rec.NetNSPath != "/ns" || !slices.Equal(rec.IPs, []string{"10.0.0.9"})) {
					t.Errorf("ready: pid %d netns %q ips %v", rec.PID, rec.NetNSPath, rec.IPs)
				}
			})
		}
	}
}

// Deletes publish once, a pod's with its last record.
func TestDeletesPublish(t *testing.T) {
	s, _ := newStore(t)
	mustCreate(t, s, readySandbox("pod1", "k1"))
	if err := s.CreateContainer(testContainer("c1", "pod1", "web", 0)); err != nil {
		t.Fatal(err)
	}
	var got []Change
	s.Notify(func(c Change) { got = append(got, c) })
	for range 2 {
		if err := s.DeleteContainer("c1"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteSandbox("pod1"); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 2 || got[0] != (Change{PodID: "pod1", ID: "c1", Kind: Deleted}) ||
		got[1].Kind != Deleted || got[1].Pod == nil || got[1].Pod.State != SandboxReady {
		t.Errorf("published %+v; want c1 deleted, then pod1 with its last record", got)
	}
}
