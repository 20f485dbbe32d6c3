// Package runc runs ketch-runc, the short-lived libcontainer helper, for
// the shim and ketchd: it creates, runs, signals, updates and destroys a
// pod's containers, and exits. The shim links no libcontainer and no cgo
// (it lives as long as its pods, and every page it holds is counted per
// pod); the helper does what runc does for containerd's shim. As with
// containerd, nothing is made for a container before its start. Package
// runc/helper is the helper's own code (command cmd/ketch-runc).
//
// One call is one process: the request goes as JSON on its stdin, the
// reply comes back as JSON on its stdout, its log (libcontainer's, and
// runc init's) goes to the caller's stderr, and the files a process gets
// are passed as the helper's own descriptors. A process it starts in a
// container outlives it: its intermediate parents exit, so it is
// reparented to the shim, which is a subreaper and reaps it.
package runc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
)

// Binary is the helper's file name: it sits beside ketch-shim.
const Binary = "ketch-runc"

// Beside is the helper beside executable exe.
func Beside(exe string) string { return filepath.Join(filepath.Dir(exe), Binary) }

// ErrNotRunning: the container has no running process to signal.
var ErrNotRunning = errors.New("container not running")

// Helper runs the helper for the containers of one pod.
type Helper struct {
	Binary string // ketch-runc
	Root   string // libcontainer's state directory of the pod's containers
}

// Process is a process to run in a container, as libcontainer takes it.
type Process struct {
	Args             []string
	Env              []string
	Cwd              string
	UID, GID         int
	AdditionalGroups []int `json:",omitempty"`
	// Init is the container's first process; without it the process joins
	// a running container (exec).
	Init bool
	// WaitChild: the program is ketch-init, which starts the container's
	// own program once its signal handlers are set (see Run).
	WaitChild bool `json:",omitempty"`

	// The process's files; nil stdio is /dev/null. Passed as descriptors.
	Stdin, Stdout, Stderr *os.File   `json:"-"`
	ConsoleSocket         *os.File   `json:"-"` // with a terminal: where runc's init sends the pty master
	ExtraFiles            []*os.File `json:"-"` // from descriptor 3 on, in the container
}

// Request is what a call sends on the helper's stdin.
type Request struct {
	Spec      json.RawMessage `json:",omitempty"` // run of an init: the container's runtime spec
	Process   *Process        `json:",omitempty"` // run
	Files     Files           `json:",omitzero"`  // run: where the helper finds the process's files
	Resources json.RawMessage `json:",omitempty"` // update: a specs.LinuxResources
	Signal    int             `json:",omitempty"` // kill
}

// Files are the helper's descriptors of a process's files; 0 is none.
type Files struct {
	Stdin, Stdout, Stderr, ConsoleSocket int   `json:",omitempty"`
	Extra                                []int `json:",omitempty"`
}

// Reply is what the helper answers on its stdout.
type Reply struct {
	Pid         int               `json:",omitempty"` // run: the process's host PID
	CgroupPaths map[string]string `json:",omitempty"` // run of an init: the container's cgroups
	Error       string            `json:",omitempty"`
	Kind        string            `json:",omitempty"` // one of the kinds below, or none
}

// The kinds of error a reply may name.
const (
	KindInvalid    = "invalid"     // the request is at fault
	KindNotRunning = "not-running" // ErrNotRunning
)

// Run starts p in container id. With p.Init it is the container's first
// process, and spec (JSON) the container's runtime spec: the helper
// converts and checks it (a spec libcontainer refuses is InvalidArgument),
// makes the container's cgroups and namespaces, and returns once the
// program has been exec'd. Without, p joins the running container. The
// reply has the process's PID and, for an init, the container's cgroups.
func (h Helper) Run(id string, spec []byte, p *Process) (Reply, error) {
	var files []*os.File
	var f Files
	add := func(file *os.File) int {
		if file == nil {
			return 0
		}
		files = append(files, file)
		return 2 + len(files) // exec.Cmd's ExtraFiles start at 3
	}
	f.Stdin, f.Stdout, f.Stderr, f.ConsoleSocket = add(p.Stdin), add(p.Stdout), add(p.Stderr), add(p.ConsoleSocket)
	for _, e := range p.ExtraFiles {
		f.Extra = append(f.Extra, add(e))
	}
	return h.call(context.Background(), "run", id, Request{Spec: spec, Process: p, Files: f}, files)
}

// Kill sends sig to container id: its init, or with SIGKILL every process
// of a container that has no PID namespace of its own.
func (h Helper) Kill(id string, sig syscall.Signal) error {
	_, err := h.call(context.Background(), "kill", id, Request{Signal: int(sig)}, nil)
	return err
}

// Update applies resources (a specs.LinuxResources, as JSON: the shim
// reads none of it but what its stats report) to running container id's
// cgroups; fields it leaves unset keep their values.
func (h Helper) Update(id string, resources []byte) error {
	_, err := h.call(context.Background(), "update", id, Request{Resources: resources}, nil)
	return err
}

// Destroy KILLs container id's processes, waits for them to go, and
// removes its cgroups and libcontainer state: also what a shim that died
// left, or a start cut short. Nothing left is no error.
func (h Helper) Destroy(ctx context.Context, id string) error {
	_, err := h.call(ctx, "destroy", id, Request{}, nil)
	return err
}

// call runs one helper command. Only Destroy may be cut short by ctx: a
// run killed half-way would leave what it made unrecorded.
func (h Helper) call(ctx context.Context, cmd, id string, req Request, files []*os.File) (Reply, error) {
	in, err := json.Marshal(req)
	if err != nil {
		return Reply{}, err
	}
	var out bytes.Buffer
	c := exec.CommandContext(ctx, h.Binary, cmd, "--root", h.Root, "--id", id)
	c.Dir = "/"
	c.Stdin, c.Stdout, c.Stderr = bytes.NewReader(in), &out, os.Stderr
	c.ExtraFiles = files
	if cmd == "run" {
		// A run whose shim died must not go on making a container nobody
		// knows of; runc's init, its child, dies with it the same way.
		// (The signal comes when the forking thread ends: only the shim,
		// which locks no thread, runs containers. ketchd, whose netns
		// work ends threads, only destroys, which may finish alone.)
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	// GC is wasted on a process this short.
	c.Env = append(os.Environ(), "GOGC=off")
	runErr := c.Run()
	var rep Reply
	if out.Len() > 0 {
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			return Reply{}, fmt.Errorf("%s %s: reply %q: %w", cmd, id, out.String(), err)
		}
	}
	switch {
	case rep.Error != "" && rep.Kind == KindInvalid:
		return rep, fmt.Errorf("%s %s: %w: %s", cmd, id, errdefs.ErrInvalidArgument, rep.Error)
	case rep.Error != "" && rep.Kind == KindNotRunning:
		return rep, fmt.Errorf("%s %s: %w", cmd, id, ErrNotRunning)
	case rep.Error != "":
		return rep, fmt.Errorf("%s %s: %s", cmd, id, rep.Error)
	case ctx.Err() != nil:
		return rep, fmt.Errorf("%s %s: %w", cmd, id, ctx.Err())
	case runErr != nil:
		return rep, fmt.Errorf("%s %s: %w", cmd, id, runErr)
	}
	return rep, nil
}

// Children are pid's child processes, whichever of its threads forked them.
func Children(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		data, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(data)) {
			if kid, err := strconv.Atoi(f); err == nil {
				out = append(out, kid)
			}
		}
	}
	return out
}

// ValidID accepts the ids libcontainer accepts, and no path tricks.
func ValidID(id string) bool {
	if id == "" || id == "." || id == ".." || len(id) > 1024 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '+' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}
