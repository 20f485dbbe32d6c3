package oci

import (
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestWorkflowOf(t *testing.T) {
	for _, tc := range []struct {
		desc       string
		ctr, pod   map[string]string
		initAlways bool
		want       Workflow
		invalid    bool
	}{
		{desc: "nothing asked"},
		{desc: "init on the container", ctr: map[string]string{AnnotationInit: "true"}, want: Workflow{Init: true}},
		{desc: "init on the pod", pod: map[string]string{AnnotationInit: "true"}, want: Workflow{Init: true}},
		{desc: "the container wins", ctr: map[string]string{AnnotationInit: "false"}, pod: map[string]string{AnnotationInit: "true"}},
		{desc: "node-wide init", initAlways: true, want: Workflow{Init: true}},
		{desc: "opted out of node-wide init", initAlways: true, ctr: map[string]string{AnnotationInit: "false"}},
		{desc: "result", ctr: map[string]string{AnnotationResult: "stdout"}, want: Workflow{Result: true}},
		{desc: "bad init value", ctr: map[string]string{AnnotationInit: "yes"}, invalid: true},
		{desc: "bad result value", pod: map[string]string{AnnotationResult: "stderr"}, invalid: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := WorkflowOf(&runtimeapi.ContainerConfig{Annotations: tc.ctr}, &runtimeapi.PodSandboxConfig{Annotations: tc.pod}, tc.initAlways)
			if tc.invalid != errdefs.IsInvalidArgument(err) || (!tc.invalid && err != nil) {
				t.Fatalf("err = %v, want invalid %v", err, tc.invalid)
			}
			if !tc.invalid && got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestWithInit(t *testing.T) {
	s := &specs.Spec{Process: &specs.Process{Args: []string{"sh", "-c", "run.sh"}}}
	WithInit(s, "/var/lib/ketch/sandbox/rootfs-x/ketch-init", 3*time.Second)
	want := []string{InitPath, "--kill-grace", "3s", "--", "sh", "-c", "run.sh"}
	if len(s.Process.Args) != len(want) {
		t.Fatalf("args %q, want %q", s.Process.Args, want)
	}
	for i := range want {
		if s.Process.Args[i] != want[i] {
			t.Fatalf("args %q, want %q", s.Process.Args, want)
		}
	}
	if m := s.Mounts[len(s.Mounts)-1]; m.Destination != InitPath || m.Source != "/var/lib/ketch/sandbox/rootfs-x/ketch-init" || m.Options[1] != "ro" {
		t.Errorf("mount %+v", m)
	}
}

func TestIsSidecar(t *testing.T) {
	for _, tc := range []struct {
		desc        string
		annotations map[string]string
		name        string
		want        bool
	}{
		{"no main", map[string]string{}, "side", false},
		{"main itself", map[string]string{AnnotationMain: "main"}, "main", false},
		{"any other", map[string]string{AnnotationMain: "main"}, "wait", true},
		{"listed", map[string]string{AnnotationMain: "main", AnnotationSidecars: "a, side"}, "side", true},
		{"not listed", map[string]string{AnnotationMain: "main", AnnotationSidecars: "a,side"}, "wait", false},
		{"empty list", map[string]string{AnnotationMain: "main", AnnotationSidecars: ""}, "wait", false},
	} {
		if got := IsSidecar(tc.annotations, tc.name); got != tc.want {
			t.Errorf("%s: IsSidecar(%v, %q) = %v, want %v", tc.desc, tc.annotations, tc.name, got, tc.want)
		}
	}
}
