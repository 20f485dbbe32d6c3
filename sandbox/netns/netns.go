// Package netns creates, checks and removes the network namespaces that pods
// live in. Each one is pinned by a bind mount at <dir>/<pod-id>, as `ip netns`
// pins its namespaces under /run/netns, so it outlives every process in it
// and can be handed to CNI plugins and libcontainer by path.
package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultDir is where ketchd pins pod network namespaces. It is volatile on
// purpose: a reboot ends every namespace, so nothing should outlive it.
const DefaultDir = "/run/ketch/netns"

// dirMu serialises the first mount of a namespace directory, so two Creates
// cannot each bind it onto itself and stack two mounts.
var dirMu sync.Mutex

// Create makes a new network namespace with lo up and pins it at dir/id,
// returning that path. An existing pin at that path is ErrAlreadyExists.
//
// The caller's goroutine and thread keep their network namespace.
func Create(dir, id string) (string, error) {
	return makePin(dir, id, func(path string) error {
		unshare := func() error { return unix.Unshare(unix.CLONE_NEWNET) }
		return onThread(unshare, func() error {
			// /proc/self/ns/net would be the main thread's namespace.
			if err := bind("/proc/thread-self/ns/net", path); err != nil {
				return err
			}
			return loUp()
		})
	})
}

// Adopt pins the network namespace a process made, named by src (its
// /proc/<pid>/ns/net), at dir/id with lo up, and returns that path: how a
// pod's user namespace comes to own the pod's network namespace (package
// userns). An existing pin at that path is ErrAlreadyExists.
func Adopt(dir, id, src string) (string, error) {
	return makePin(dir, id, func(path string) error {
		if err := bind(src, path); err != nil {
			return err
		}
		return Do(path, loUp)
	})
}

// makePin makes the mount point dir/id and has pin mount a namespace on
// it; a failure removes both.
func makePin(dir, id string, pin func(path string) error) (string, error) {
	if id == "" || id == "." || id == ".." || strings.ContainsRune(id, '/') {
		return "", fmt.Errorf("netns name %q: %w", id, errdefs.ErrInvalidArgument)
	}
	if err := prepareDir(dir); err != nil {
		return "", err
	}
	path := filepath.Join(dir, id)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("netns %s: %w", path, errdefs.ErrAlreadyExists)
	}
	if err != nil {
		return "", fmt.Errorf("create netns mount point: %w", err)
	}
	f.Close()
	if err := pin(path); err != nil {
		_ = unix.Unmount(path, unix.MNT_DETACH)
		_ = os.Remove(path)
		return "", fmt.Errorf("create netns %s: %w", path, err)
	}
	return path, nil
}

// Do runs fn on an OS thread inside the network namespace pinned at path.
// Sockets fn opens stay in that netns after Do returns, which is how to
// listen or dial inside a pod. Goroutines fn starts run in the caller's
// netns, not the pod's.
func Do(path string, fn func() error) error {
	if err := Check(path); err != nil {
		return err
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer unix.Close(fd)
	return onThread(func() error { return unix.Setns(fd, unix.CLONE_NEWNET) }, fn)
}

// onThread runs enter, which moves the current OS thread to another netns,
// then fn, on a thread of its own. setns and unshare(CLONE_NEWNET) move one
// thread, not the process: the thread is locked so no other goroutine runs
// on it meanwhile, and never unlocked, so Go ends it when the goroutine
// returns and it cannot carry a pod's netns to unrelated goroutines.
func onThread(enter, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- switchThread(enter, fn)
	}()
	return <-errc
}

func switchThread(enter, fn func() error) error {
	// Go does not end the process's main thread when a goroutine locked to
	// it returns; it parks it for good. If that thread ran this, it would
	// stay in the pod's netns, keep it alive after Remove, and make
	// /proc/<ketchd>/ns/net name it. So the thread goes back to where it was.
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open current netns: %w", err)
	}
	defer unix.Close(orig)
	if err := enter(); err != nil {
		return fmt.Errorf("enter netns: %w", err)
	}
	defer func() { _ = unix.Setns(orig, unix.CLONE_NEWNET) }() // the thread is discarded even if this fails
	return fn()
}

func bind(src, path string) error {
	if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount: %w", err)
	}
	return nil
}

// loUp runs in the new netns and sets its lo up.
func loUp() error {
	// Netlink sockets belong to the netns of the thread that opens them, so
	// this handle talks to the new namespace.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// prepareDir makes dir a shared mount point, as `ip netns add` does with
// /run/netns: a pin made or removed here then propagates to every mount
// namespace that holds a copy of dir, so a copy cannot keep a removed
// namespace alive.
func prepareDir(dir string) error {
	dirMu.Lock()
	defer dirMu.Unlock()
	// Closed: its entries are pod IDs, and no one but root joins them.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create netns dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("netns dir: %w", err)
	}
	err := unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, "")
	if !errors.Is(err, unix.EINVAL) {
		return wrapMountErr(dir, err)
	}
	// EINVAL: dir is not a mount point yet; make it one.
	if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return wrapMountErr(dir, err)
	}
	return wrapMountErr(dir, unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, ""))
}

func wrapMountErr(dir string, err error) error {
	if err != nil {
		return fmt.Errorf("make %s a shared mount: %w", dir, err)
	}
	return nil
}

// Remove unpins the namespace at path (a network namespace, or any other
// pinned by bind mount, as package userns does) and deletes the mount
// point; the kernel frees the namespace once no process is left in it.
// Removing a path that is already gone, or was never pinned, succeeds.
func Remove(path string) error {
	// MNT_DETACH: a plugin or nsenter that still has the file open must
	// not make the pod's removal fail.
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount namespace pin %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove namespace pin %s: %w", path, err)
	}
	return nil
}

// Check reports nil when path pins a network namespace, and an error
// wrapping ErrNotFound when the namespace vanished: the file is gone, or
// was unmounted, or pins another kind of namespace.
func Check(path string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("netns %s is gone: %w", path, errdefs.ErrNotFound)
		}
		return fmt.Errorf("netns %s: %w", path, err)
	}
	if st.Type != unix.NSFS_MAGIC {
		return fmt.Errorf("netns %s is not mounted: %w", path, errdefs.ErrNotFound)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netns %s: %w", path, err)
	}
	defer unix.Close(fd)
	kind, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil {
		return fmt.Errorf("netns %s: namespace type: %w", path, err)
	}
	if kind != unix.CLONE_NEWNET {
		return fmt.Errorf("netns %s pins a namespace of another kind: %w", path, errdefs.ErrNotFound)
	}
	return nil
}
