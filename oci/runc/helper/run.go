package helper

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	// Without it libcontainer cannot apply the device rules every
	// container has ("cgroup manager is not configured to set device rules").
	_ "github.com/opencontainers/cgroups/devices"
	"github.com/opencontainers/runc/libcontainer"

	"ketch.dev/ketch/oci/runc"
)

// run starts req.Process in container id, and answers its PID and, for an
// init, the container's cgroups. An init starts the container req.Spec
// describes; its config is saved in the state directory first thing, so
// that what a start cut short made is found from it. What a failed start
// left is removed before another.
func run(root, id string, req runc.Request) (runc.Reply, error) {
	p := req.Process
	if p == nil || len(p.Args) == 0 {
		return runc.Reply{}, invalidError{errors.New("no process to run")}
	}
	lp, err := process(p, req.Files)
	if err != nil {
		return runc.Reply{}, err
	}
	var lc *libcontainer.Container
	if p.Init {
		config, err := libcontainerConfig(id, req.Spec)
		if err != nil {
			return runc.Reply{}, err
		}
		if err := destroyUnstarted(root, id); err != nil {
			return runc.Reply{}, err
		}
		if lc, err = libcontainer.Create(root, id, config); err != nil {
			return runc.Reply{}, fmt.Errorf("create %s: %w", id, err)
		}
		if err := saveConfig(root, id, config); err != nil {
			return runc.Reply{}, fmt.Errorf("create %s: %w", id, err)
		}
	} else if lc, err = libcontainer.Load(root, id); err != nil {
		return runc.Reply{}, fmt.Errorf("load %s: %w", id, err)
	}
	if err := lc.Run(lp); err != nil {
		return runc.Reply{}, err
	}
	pid, err := lp.Pid()
	if err != nil {
		return runc.Reply{}, err
	}
	r := runc.Reply{Pid: pid}
	if p.Init {
		waitExec(pid, p.WaitChild)
		if st, err := lc.State(); err == nil {
			r.CgroupPaths = st.CgroupPaths
		}
	}
	return r, nil
}

// process is p as libcontainer takes it, with its files from the
// descriptors the caller passed.
func process(p *runc.Process, f runc.Files) (*libcontainer.Process, error) {
	lp := &libcontainer.Process{
		Args: p.Args, Env: p.Env, Cwd: p.Cwd,
		UID: p.UID, GID: p.GID, AdditionalGroups: p.AdditionalGroups,
		Init: p.Init,
	}
	file := func(fd int) *os.File {
		if fd < 3 {
			return nil
		}
		return os.NewFile(uintptr(fd), fmt.Sprint("fd", fd))
	}
	// Only set ones: libcontainer gives a nil one /dev/null, a typed nil
	// in the interface would not be nil.
	if in := file(f.Stdin); in != nil {
		lp.Stdin = in
	}
	if out := file(f.Stdout); out != nil {
		lp.Stdout = out
	}
	if out := file(f.Stderr); out != nil {
		lp.Stderr = out
	}
	lp.ConsoleSocket = file(f.ConsoleSocket)
	for _, fd := range f.Extra {
		e := file(fd)
		if e == nil {
			return nil, invalidError{fmt.Errorf("extra file on descriptor %d", fd)}
		}
		lp.ExtraFiles = append(lp.ExtraFiles, e)
	}
	return lp, nil
}

// waitExec waits, briefly, until pid has exec'd the container's program.
// libcontainer's Run returns once it has told runc's init to exec, a
// moment before it does; a stop signal in between would reach runc's Go
// init, which has handlers for every signal and so, as PID 1, exits 2 on a
// TERM the program itself (a shell as PID 1) would have ignored.
//
// runc's init runs from a sealed copy of this binary, so its command line,
// not its executable, tells it: libcontainer gives it our argv[0], "init".
//
// ketch-init in init mode (withChild) is a Go program too: until it has
// set its handlers up a TERM would make it exit 2; it starts the
// container's own program once they are.
//
// The shim reaps nothing while a helper runs, so pid is the container's
// until this returns, even if it has exited.
func waitExec(pid int, withChild bool) {
	runcInit := []byte(os.Args[0] + "\x00init\x00")
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
		// Not "empty means gone": mid-execve a live process's command
		// line reads empty until the new program's arguments are set up.
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			return // gone
		}
		if bytes.Equal(b, runcInit) {
			continue
		}
		if !withChild || len(runc.Children(pid)) > 0 {
			return
		}
	}
}

// kill sends sig to container id's init; libcontainer KILLs a container
// whole, so that no process of it sees another die first (a shell would
// log "Killed"): its PID 1 takes a PID namespace of its own with it; in a
// shared one the cgroup is killed frozen, or through cgroup.kill.
func kill(root, id string, sig int) error {
	lc, err := libcontainer.Load(root, id)
	if errors.Is(err, libcontainer.ErrNotExist) {
		return libcontainer.ErrNotRunning
	}
	if err != nil {
		return fmt.Errorf("load %s: %w", id, err)
	}
	return lc.Signal(syscall.Signal(sig))
}
