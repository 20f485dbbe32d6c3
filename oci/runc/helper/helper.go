// Package helper is ketch-runc, the short-lived libcontainer helper
// (command cmd/ketch-runc): one command a process, driven by package
// oci/runc. It is the only ketch process besides runc's init that links
// libcontainer.
package helper

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/configs/validate"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"github.com/opencontainers/runtime-spec/specs-go"

	"ketch.dev/ketch/oci/runc"
)

// Main runs the command args name (run, kill, update, destroy)
// with the request on stdin and the reply on stdout, and returns the exit
// status: 0, 1 for an error the reply describes, 2 for bad usage.
func Main(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: ketch-runc run|kill|update|destroy --root <state dir> --id <id>")
		return 2
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	root := fs.String("root", "", "libcontainer's state directory of the pod")
	id := fs.String("id", "", "the container's ID")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if !filepath.IsAbs(*root) || !runc.ValidID(*id) {
		fmt.Fprintln(os.Stderr, "ketch-runc: an absolute --root and a valid --id are required")
		return 2
	}
	var req runc.Request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		return reply(runc.Reply{}, fmt.Errorf("request: %w", err))
	}
	switch args[0] {
	case "run":
		return reply(run(*root, *id, req))
	case "kill":
		return reply(runc.Reply{}, kill(*root, *id, req.Signal))
	case "update":
		return reply(runc.Reply{}, update(*root, *id, req.Resources))
	case "destroy":
		return reply(runc.Reply{}, destroy(*root, *id))
	}
	fmt.Fprintf(os.Stderr, "ketch-runc: unknown command %q\n", args[0])
	return 2
}

// invalidError marks an error as the request's fault.
type invalidError struct{ error }

func (e invalidError) Unwrap() error { return e.error }

func reply(r runc.Reply, err error) int {
	status := 0
	if err != nil {
		var inv invalidError
		switch {
		case errors.As(err, &inv):
			r.Kind = runc.KindInvalid
		case errors.Is(err, libcontainer.ErrNotRunning):
			r.Kind = runc.KindNotRunning
		}
		r.Error, status = err.Error(), 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		return 1
	}
	return status
}

// libcontainerConfig converts spec, JSON, to libcontainer's config and checks it.
func libcontainerConfig(id string, specJSON []byte) (*configs.Config, error) {
	var spec specs.Spec
	if err := json.Unmarshal(specJSON, &spec); err != nil {
		return nil, invalidError{fmt.Errorf("spec: %w", err)}
	}
	if spec.Process == nil || spec.Root == nil || spec.Linux == nil {
		return nil, invalidError{errors.New("spec needs process, root and linux")}
	}
	if adj := spec.Process.OOMScoreAdj; adj != nil {
		oom, err := clampOOMScoreAdj(*adj)
		if err != nil {
			return nil, err
		}
		spec.Process.OOMScoreAdj = &oom
	}
	config, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		CgroupName: id,
		// cgroupfs paths are absolute; systemd ones are slice:prefix:name.
		UseSystemdCgroup: !strings.HasPrefix(spec.Linux.CgroupsPath, "/"),
		Spec:             &spec,
	})
	if err == nil {
		err = validate.Validate(config)
	}
	if err != nil {
		return nil, invalidError{err}
	}
	return config, nil
}
