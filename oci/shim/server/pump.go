package server

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// pump reads the output of every container the shim serves on one
// goroutine, through an epoll instance of its own that Go's poller waits
// on: a goroutine parked on each stdout and stderr cost a pod more of its
// shim's memory (their stacks) than anything else it holds. Each ready
// descriptor gets one read a round, so a chatty container cannot starve
// the others; what a read goes to (the log file, attached clients' queues,
// a result's capture) never waits on a client.
type pump struct {
	epfd int
	ep   *os.File // epfd, for Go's poller to wait on

	mu sync.Mutex
	// The streams by descriptor. Held while a stream's callbacks run, so a
	// cut never races a read of the same stream. An event still on its
	// way for a cut stream's descriptor, whose number a new stream took,
	// costs the new one only a read that finds nothing (EAGAIN).
	streams map[int32]*pumped
}

// readBufs lends the buffer a read goes into, so that a shim whose
// containers are quiet holds none once it has collected its garbage.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// pumped is one stream the pump reads: data gets each piece read (and
// must not keep it), end is called once, when the stream ended or was cut.
type pumped struct {
	fd   int
	data func([]byte)
	end  func()
}

// output is the shim's pump, started with the first stream.
var output = sync.OnceValues(func() (*pump, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("epoll: %w", err)
	}
	p := &pump{epfd: fd, ep: os.NewFile(uintptr(fd), "epoll"), streams: map[int32]*pumped{}}
	rc, err := p.ep.SyscallConn()
	if err != nil {
		p.ep.Close()
		return nil, err
	}
	go p.run(rc)
	return p, nil
})

// add has the pump read fd, non-blocking, which it owns from now on (it is
// closed when the stream ends or is cut).
func (p *pump) add(fd int, data func([]byte), end func()) (*pumped, error) {
	s := &pumped{fd: fd, data: data, end: end}
	p.mu.Lock()
	defer p.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("epoll add: %w", err)
	}
	p.streams[int32(fd)] = s
	return s, nil
}

// cut stops reading s, if it has not ended yet, and ends it.
func (p *pump) cut(s *pumped) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.streams[int32(s.fd)] == s {
		p.endLocked(s)
	}
}

func (p *pump) endLocked(s *pumped) {
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
	delete(p.streams, int32(s.fd))
	unix.Close(s.fd)
	s.end()
}

func (p *pump) run(rc syscall.RawConn) {
	events := make([]unix.EpollEvent, 64)
	for {
		var n int
		err := rc.Read(func(ep uintptr) bool {
			var err error
			n, err = unix.EpollWait(int(ep), events, 0)
			return n > 0 || err != nil && err != unix.EINTR
		})
		if err != nil {
			// Not expected: the instance is never closed.
			slog.Error("output pump stopped", "err", err)
			return
		}
		for _, ev := range events[:max(n, 0)] {
			p.read(ev.Fd)
		}
	}
}

// read reads once from a ready stream, and ends it at its end or error.
func (p *pump) read(fd int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.streams[fd]
	if s == nil {
		return // cut since the event
	}
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	n, err := unix.Read(int(fd), *bp)
	for err == unix.EINTR {
		n, err = unix.Read(int(fd), *bp)
	}
	switch {
	case err == unix.EAGAIN:
	case n > 0:
		s.data((*bp)[:n])
	default:
		p.endLocked(s)
	}
}
