package oci

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The workflow annotations, on the container or on its pod (the
// container's wins).
const (
	// AnnotationInit "true" makes ketch-init the container's PID 1.
	AnnotationInit = "ketch.dev/init"
	// AnnotationResult "stdout" keeps the container's stdout as its result.
	AnnotationResult = "ketch.dev/result"
	// AnnotationMain, on the pod, names the container whose exit stops the
	// pod's other containers (its sidecars).
	AnnotationMain = "ketch.dev/main"
	// AnnotationSidecars, on the pod, lists (comma-separated) the only
	// containers the main container's exit stops: a workflow engine's own
	// helpers (Argo's wait container) must outlive main to report its
	// outputs.
	AnnotationSidecars = "ketch.dev/sidecars"
)

// IsSidecar tells whether the container named is stopped when the main
// container of a pod with these annotations exits.
func IsSidecar(podAnnotations map[string]string, name string) bool {
	main, ok := podAnnotations[AnnotationMain]
	if !ok || name == main {
		return false
	}
	list, ok := podAnnotations[AnnotationSidecars]
	if !ok {
		return true
	}
	for _, s := range strings.Split(list, ",") {
		if strings.TrimSpace(s) == name {
			return true
		}
	}
	return false
}

// InitPath is where ketch-init is bind-mounted in a container it runs.
const InitPath = "/.ketch/init"

// Workflow is what the workflow annotations ask of a container.
type Workflow struct {
	Init   bool // ketch-init as PID 1
	Result bool // stdout kept as the result
}

// WorkflowOf reads the workflow annotations of a container and its pod;
// initAlways is the node's `[workflow] init = "always"`. An unknown value
// is an InvalidArgument naming the annotation.
func WorkflowOf(cfg *runtimeapi.ContainerConfig, pod *runtimeapi.PodSandboxConfig, initAlways bool) (Workflow, error) {
	get := func(key string) (string, bool) {
		if v, ok := cfg.GetAnnotations()[key]; ok {
			return v, true
		}
		v, ok := pod.GetAnnotations()[key]
		return v, ok
	}
	w := Workflow{Init: initAlways}
	if v, ok := get(AnnotationInit); ok {
		switch v {
		case "true":
			w.Init = true
		case "false":
			w.Init = false
		default:
			return w, fmt.Errorf("annotation %s=%q: want \"true\" or \"false\": %w", AnnotationInit, v, errdefs.ErrInvalidArgument)
		}
	}
	if v, ok := get(AnnotationResult); ok {
		if v != "stdout" {
			return w, fmt.Errorf("annotation %s=%q: want \"stdout\": %w", AnnotationResult, v, errdefs.ErrInvalidArgument)
		}
		w.Result = true
	}
	return w, nil
}

// WithInit puts ketch-init (the host file initBinary, bind-mounted
// read-only) in front of the container's command: it becomes PID 1, runs
// the command in its own process group with the same user, env and cwd,
// forwards signals to the group, reaps orphans, and gives what is left of
// the group killGrace between TERM and KILL after the command exits.
func WithInit(s *specs.Spec, initBinary string, killGrace time.Duration) {
	s.Mounts = append(s.Mounts, specs.Mount{
		Destination: InitPath, Type: "bind", Source: initBinary,
		Options: []string{"rbind", "ro", "nosuid", "nodev"},
	})
	s.Process.Args = append([]string{InitPath, "--kill-grace", killGrace.String(), "--"}, slices.Clone(s.Process.Args)...)
}
