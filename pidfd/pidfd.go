// Package pidfd waits for child processes through Go's netpoller: a pidfd
// is readable once its process has exited. exec.Cmd.Wait instead blocks an
// OS thread in waitid for as long as the child lives, so a daemon that runs
// many children at once (shims, CNI plugins) grows a thread for each.
package pidfd

import (
	"os"
	"os/exec"

	"golang.org/x/sys/unix"
)

// WaitCmd is cmd.Wait, started, holding no OS thread until cmd has exited.
func WaitCmd(cmd *exec.Cmd) error {
	fd, err := unix.PidfdOpen(cmd.Process.Pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return cmd.Wait() // a kernel without pidfds: a thread it is
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Read(func(fd uintptr) bool {
			n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
			return n > 0 || err != nil && err != unix.EINTR
		})
	}
	return cmd.Wait()
}
