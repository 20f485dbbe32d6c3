package server

import (
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// runSpec is what the shim reads of a runtime spec from ketchd; ketch-runc
// gets the bytes as they came, and reads the rest. Not specs.Spec:
// encoding/json builds a type's encoders even to decode it, and those of
// every spec type cost each shim ~100 KiB more for its life.
type runSpec struct {
	Process *process
	Root    *struct{ Path string }
	Mounts  []struct{ Destination, Source, Type string }
	Linux   *struct {
		CgroupsPath string
		Namespaces  []struct {
			Type specs.LinuxNamespaceType
			Path string
		}
		Resources *settings
	}
}

// process is what a start, and an exec, hand ketch-runc of the spec's
// process: libcontainer takes the rest from the container's config.
type process struct {
	Terminal bool
	User     struct {
		UID, GID       uint32
		AdditionalGids []uint32
	}
	Args, Env []string
	Cwd       string
}

// settings are a container's cgroup settings that its stats report.
type settings struct {
	CPU struct {
		Shares, Period *uint64
		Quota          *int64
	}
	Memory struct{ Reservation *int64 }
}

func decodeSpec(specJSON []byte) (*runSpec, error) {
	var spec runSpec
	if err := json.Unmarshal(specJSON, &spec); err != nil {
		return nil, fmt.Errorf("spec: %w: %w", errdefs.ErrInvalidArgument, err)
	}
	return &spec, nil
}
