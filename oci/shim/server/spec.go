package server

import (
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// decodeSpec reads a runtime spec from ketchd. The shim keeps the bytes
// for ketch-runc as they came: encoding a spec again would cost every
// shim encoding/json's cache of every spec type (~150 KiB, for its life).
func decodeSpec(specJSON []byte) (*specs.Spec, error) {
	var spec specs.Spec
	if err := json.Unmarshal(specJSON, &spec); err != nil {
		return nil, fmt.Errorf("spec: %w: %w", errdefs.ErrInvalidArgument, err)
	}
	return &spec, nil
}
