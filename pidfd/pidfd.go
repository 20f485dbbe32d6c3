// Package pidfd waits for child processes through Go's netpoller: a pidfd
// is readable once its process has exited. exec.Cmd.Wait instead blocks an
// OS thread in waitid for as long as the child lives, so a daemon that runs
// many children at once (shims, CNI plugins) grows a thread for each.
package pidfd

import (
	"fmt"
	"os"
	"os/exec"
	"sync"

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

// Set calls a function once a process has exited, for any number of
// processes, from one goroutine: a pidfd each in one epoll, which Go's
// netpoller waits on. A goroutine each, blocked in a call that returns at
// the exit, costs several KiB of stack and heap a process.
type Set struct {
	ep   *os.File // for the netpoller
	epfd int      // ep's, for epoll_ctl: ep.Fd() would make ep blocking

	mu      sync.Mutex
	watches map[uint64]watch // by the ID in the epoll event; guarded by mu
	next    uint64           // guarded by mu
}

type watch struct {
	fd int
	fn func()
}

// NewSet starts a Set's goroutine; Close ends it.
func NewSet() (*Set, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("epoll: %w", err)
	}
	s := &Set{ep: os.NewFile(uintptr(fd), "epoll"), epfd: fd, watches: map[uint64]watch{}}
	go s.run()
	return s, nil
}

// Watch has fn called once process pid has exited, at once if it has (a
// zombie). It returns false when pid cannot be watched (it is gone, or the
// kernel has no pidfds): the caller acts then as if it had exited. fn runs
// on the Set's goroutine: it must not block.
func (s *Set) Watch(pid int, fn func()) bool {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watches == nil { // closed
		unix.Close(fd)
		return false
	}
	s.next++
	id := s.next
	// The ID, not the fd, names the watch: a closed fd's number comes back
	// with the next pidfd, while an event for it may still be on its way.
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(id), Pad: int32(id >> 32)}
	if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(fd)
		return false
	}
	s.watches[id] = watch{fd, fn}
	return true
}

func (s *Set) run() {
	rc, err := s.ep.SyscallConn()
	if err != nil {
		return
	}
	events := make([]unix.EpollEvent, 64)
	for {
		var n int
		err := rc.Read(func(fd uintptr) bool {
			var err error
			n, err = unix.EpollWait(int(fd), events, 0)
			return n > 0 || err != nil && err != unix.EINTR
		})
		if err != nil {
			return // closed
		}
		for _, ev := range events[:max(n, 0)] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			s.mu.Lock()
			w, ok := s.watches[id]
			if ok {
				delete(s.watches, id)
				_ = unix.EpollCtl(s.epfd, unix.EPOLL_CTL_DEL, w.fd, nil)
				unix.Close(w.fd)
			}
			s.mu.Unlock()
			if ok {
				w.fn()
			}
		}
	}
}

// Close ends the Set's goroutine and drops every watch without calling it.
func (s *Set) Close() error {
	s.mu.Lock()
	for _, w := range s.watches {
		unix.Close(w.fd)
	}
	s.watches = nil
	s.mu.Unlock()
	return s.ep.Close()
}
