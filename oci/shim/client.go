package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"ketch.dev/ketch/oci/shim/api"
	"ketch.dev/ketch/pidfd"
)

// Client is ketchd's client of one pod's shim. The clients of a shim's
// pods share one connection (conn); closing a client, or ketchd dying,
// leaves the shim and its pod running; Connect reaches it again.
//
// Its errors carry errdefs sentinels (errdefs.IsNotFound and the like), as
// the shim's handlers wrapped them.
type Client struct {
	conn    *conn
	pod     string // the pod's id, which every call names
	dir     string // the pod's directory
	onClose func()
	ending  atomic.Bool // Close or Shutdown ends the client: no news
}

// conn is ketchd's one connection to a shim, shared by its pods' clients.
type conn struct {
	dir    string // where its sockets are: the shim's directory
	ttrpc  *ttrpc.Client
	shim   api.ShimService
	closed chan struct{} // closed when the connection ends, by either side

	// clients are those using it; guarded by connsMu.
	clients map[*Client]bool
}

// conns are the open connections by shim directory; connsMu guards it and
// each conn's clients.
var (
	connsMu sync.Mutex
	conns   = map[string]*conn{}
)

// Connect reaches the shim serving the pod directory dir, which is named
// by the pod's id (<state>/pods/<id>), on the shim's one connection;
// onClose, if not nil, is called if the connection ends other than by
// Close or Shutdown: the shim died, most likely. opts add to a new
// connection's (ketchd's tracing). When no shim serves it, the error is
// errdefs.ErrNotFound.
func Connect(ctx context.Context, dir string, onClose func(), opts ...ttrpc.ClientOpts) (*Client, error) {
	// A shim that ketch 0.1.0 started serves each pod on sockets in the
	// pod's directory, and takes its calls as its own.
	shimDir := dir
	if _, err := os.Stat(filepath.Join(dir, SockFile)); err != nil {
		if shimDir, err = os.Readlink(filepath.Join(dir, ShimLink)); err != nil {
			return nil, fmt.Errorf("no shim serves %s: %w: %w", dir, errdefs.ErrNotFound, err)
		}
	}
	c := &Client{pod: filepath.Base(dir), dir: dir, onClose: onClose}
	connsMu.Lock()
	sc := conns[shimDir]
	if sc != nil {
		sc.clients[c] = true
		c.conn = sc
	}
	connsMu.Unlock()
	if sc != nil {
		return c, nil
	}
	// Dialled without the lock: a shim that does not accept must hold up
	// no other.
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", filepath.Join(shimDir, SockFile))
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("no shim serves %s: %w: %w", dir, errdefs.ErrNotFound, err)
		}
		return nil, fmt.Errorf("connect to shim in %s: %w", shimDir, err)
	}
	sc = &conn{dir: shimDir, closed: make(chan struct{}), clients: map[*Client]bool{c: true}}
	sc.ttrpc = ttrpc.NewClient(nc, append(opts, ttrpc.WithOnClose(sc.ended))...)
	sc.shim = api.NewShimClient(sc.ttrpc)
	c.conn = sc
	connsMu.Lock()
	other := conns[shimDir]
	if other == nil {
		conns[shimDir] = sc
	} else { // another Connect got there first: share its connection
		delete(sc.clients, c)
		other.clients[c] = true
		c.conn = other
	}
	connsMu.Unlock()
	if other != nil {
		sc.ttrpc.Close()
	}
	return c, nil
}

// ended tells the clients that did not end themselves that the
// connection did.
func (sc *conn) ended() {
	connsMu.Lock()
	close(sc.closed)
	if conns[sc.dir] == sc {
		delete(conns, sc.dir)
	}
	var tell []func()
	for c := range sc.clients {
		if c.onClose != nil && !c.ending.Load() {
			tell = append(tell, c.onClose)
		}
	}
	connsMu.Unlock()
	for _, f := range tell {
		f()
	}
}

// Close lets the client go; the connection ends with the last client of
// the shim's, and the shim keeps running.
func (c *Client) Close() error {
	c.ending.Store(true)
	connsMu.Lock()
	sc := c.conn
	delete(sc.clients, c)
	last := len(sc.clients) == 0
	if last && conns[sc.dir] == sc {
		delete(conns, sc.dir)
	}
	connsMu.Unlock()
	if last {
		return sc.ttrpc.Close()
	}
	return nil
}

// Closed reports whether the connection has ended: closed here, or the
// shim gone. Connect again to reach a shim that serves the pod now.
func (c *Client) Closed() bool {
	select {
	case <-c.conn.closed:
		return true
	default:
		return false
	}
}

// Done is closed when the connection ends, as Closed then reports.
func (c *Client) Done() <-chan struct{} { return c.conn.closed }

// Gone reports whether err, from a call on c, means the shim went away
// (it died or was killed): what it held is then left for Destroy.
func (c *Client) Gone(err error) bool {
	return err != nil && (errors.Is(err, ttrpc.ErrClosed) || c.Closed())
}

// call is ctx naming the client's pod, as every Shim API call does.
func (c *Client) call(ctx context.Context) context.Context {
	md, ok := ttrpc.GetMetadata(ctx)
	if ok {
		md = md.Clone()
	} else {
		md = ttrpc.MD{}
	}
	md.Set(PodMetadata, c.pod)
	return ttrpc.WithMetadata(ctx, md)
}

// StartSandbox starts the pod's PID 1 from spec (oci.SandboxSpec) and
// returns its host PID.
func (c *Client) StartSandbox(ctx context.Context, spec *specs.Spec) (int, error) {
	data, err := json.Marshal(spec)
	if err != nil {
		return 0, fmt.Errorf("start sandbox: %w", err)
	}
	r, err := c.conn.shim.StartSandbox(c.call(ctx), &api.StartSandboxRequest{Spec: data})
	if err != nil {
		return 0, fromTTRPC(err)
	}
	return int(r.GetPid()), nil
}

// CreateContainer sets app container id up from spec (its root mounted);
// nothing runs until StartContainer.
func (c *Client) CreateContainer(ctx context.Context, id string, spec *specs.Spec, o ContainerOptions) error {
	data, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("create container %s: %w", id, err)
	}
	_, err = c.conn.shim.CreateContainer(c.call(ctx), &api.CreateContainerRequest{
		Id: id, Spec: data, LogPath: o.LogPath, LogDir: o.LogDir, Stdin: o.Stdin, StdinOnce: o.StdinOnce, ResultCap: int64(o.ResultCap), Init: o.Init,
	})
	return fromTTRPC(err)
}

// StartContainer runs created container id's program and returns when it
// started. errdefs.ErrNotFound: the program is not in the image.
func (c *Client) StartContainer(ctx context.Context, id string) (Started, error) {
	r, err := c.conn.shim.StartContainer(c.call(ctx), &api.StartContainerRequest{Id: id})
	if err != nil {
		return Started{}, fromTTRPC(err)
	}
	return Started{At: time.Unix(0, r.GetStartedAtUnixNano()), Pid: int(r.GetPid())}, nil
}

// DeleteContainer kills container id if it runs and removes it; unknown
// ids succeed.
func (c *Client) DeleteContainer(ctx context.Context, id string) error {
	_, err := c.conn.shim.DeleteContainer(c.call(ctx), &api.DeleteContainerRequest{Id: id})
	return fromTTRPC(err)
}

// ReopenLog reopens running container id's log file.
func (c *Client) ReopenLog(ctx context.Context, id string) error {
	_, err := c.conn.shim.ReopenLog(c.call(ctx), &api.ReopenLogRequest{Id: id})
	return fromTTRPC(err)
}

// ExecSync runs args in running container id and returns what it did.
func (c *Client) ExecSync(ctx context.Context, id string, args []string, timeout time.Duration) (ExecResult, error) {
	r, err := c.conn.shim.ExecSync(c.call(ctx), &api.ExecSyncRequest{Id: id, Args: args, TimeoutNano: int64(timeout)})
	if err != nil {
		return ExecResult{}, fromTTRPC(err)
	}
	return ExecResult{Stdout: r.GetStdout(), Stderr: r.GetStderr(), ExitCode: int(r.GetExitCode()), TimedOut: r.GetTimedOut()}, nil
}

// Update applies new resource limits to running container id.
func (c *Client) Update(ctx context.Context, id string, r *specs.LinuxResources) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = c.conn.shim.Update(c.call(ctx), &api.UpdateRequest{Id: id, Resources: data})
	return fromTTRPC(err)
}

// State returns container id's state; the sandbox's id is the pod id.
func (c *Client) State(ctx context.Context, id string) (State, error) {
	r, err := c.conn.shim.State(c.call(ctx), &api.StateRequest{Id: id})
	if err != nil {
		return State{}, fromTTRPC(err)
	}
	return stateFromProto(r), nil
}

// Kill signals container id's init, or with all every process in its
// cgroup. errdefs.ErrFailedPrecondition means it is not running.
func (c *Client) Kill(ctx context.Context, id string, sig syscall.Signal, all bool) error {
	_, err := c.conn.shim.Kill(c.call(ctx), &api.KillRequest{Id: id, Signal: uint32(sig), All: all})
	return fromTTRPC(err)
}

// Wait blocks until container id's init has exited and returns its exit.
func (c *Client) Wait(ctx context.Context, id string) (Exit, error) {
	r, err := c.conn.shim.Wait(c.call(ctx), &api.WaitRequest{Id: id})
	if err != nil {
		return Exit{}, fromTTRPC(err)
	}
	return *exitFromProto(r.GetExit()), nil
}

// Stats reads container id's cgroup usage, or with pod that of the pod's
// cgroup, the one above the sandbox's (see Service.Stats).
func (c *Client) Stats(ctx context.Context, id string, o StatsOptions) (Stats, error) {
	r, err := c.conn.shim.Stats(c.call(ctx), &api.StatsRequest{Id: id, Pod: o.Pod, Full: o.Full})
	if err != nil {
		return Stats{}, fromTTRPC(err)
	}
	return statsFromProto(r)
}

// Shutdown kills the pod's processes, removes their cgroups and state, and
// has the shim stop serving the pod; when it served no other, it returns
// once the shim process is gone. The connection is closed afterwards.
func (c *Client) Shutdown(ctx context.Context) error {
	// Opened while the shim surely lives: a pidfd then tells when it has
	// exited, whoever its parent is (ketchd, or init after a restart).
	pidfd := shimPidfd(filepath.Join(c.dir, ShimLink))
	if pidfd >= 0 {
		defer unix.Close(pidfd)
	}
	c.ending.Store(true)
	r, err := c.conn.shim.Shutdown(c.call(ctx), &api.ShutdownRequest{})
	// The shim may close the connection before its reply is out (ttrpc
	// closes connections it believes idle as a shim ends). It removes the
	// pod's link only after everything else, so a missing link proves a
	// finished job.
	if errors.Is(err, ttrpc.ErrClosed) {
		if _, serr := os.Lstat(filepath.Join(c.dir, ShimLink)); errors.Is(serr, os.ErrNotExist) {
			err = nil
		}
	}
	if err != nil {
		return fromTTRPC(err)
	}
	if pidfd >= 0 && r.GetLast() {
		if err := waitExit(ctx, pidfd, shimExitTimeout); err != nil {
			return fmt.Errorf("shim of %s: %w", c.dir, err)
		}
	}
	return c.Close()
}

// shimExitTimeout bounds the wait for a shim that has answered Shutdown to
// exit: it only has to close its listener.
const shimExitTimeout = 5 * time.Second

// shimPidfd opens a pidfd on the shim whose directory is dir, named by
// its pid file; -1 when that cannot be done (the shim is then not waited
// for).
func shimPidfd(dir string) int {
	pid, err := PID(dir)
	if err != nil {
		return -1
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1
	}
	return fd
}

// PID reads the PID the shim whose directory is dir wrote; dir may be a
// pod directory's ShimLink.
func PID(dir string) (int, error) {
	data, err := os.ReadFile(filepath.Join(dir, PIDFile))
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s: bad pid file: %q", dir, data)
	}
	return pid, nil
}

// waitExit waits until the process behind pidfd has exited.
func waitExit(ctx context.Context, pidfd int, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for {
		ms := int(time.Until(deadline).Milliseconds())
		if ms <= 0 {
			return fmt.Errorf("did not exit after Shutdown: %w", errdefs.ErrUnavailable)
		}
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
	}
}

// fromTTRPC turns the shim's status codes back into errdefs sentinels. A
// connection that ended is ErrUnavailable and stays ttrpc.ErrClosed, so
// Gone can tell a dead shim from a refusal.
func fromTTRPC(err error) error {
	if errors.Is(err, ttrpc.ErrClosed) {
		return fmt.Errorf("shim connection: %w: %w", errdefs.ErrUnavailable, err)
	}
	return errgrpc.ToNative(err)
}

// LaunchOptions say how to start a shim.
type LaunchOptions struct {
	Binary string // the ketch-shim executable
	Dir    string // the shim's directory
	Log    string // the shim's log file; empty discards its output
}

// shims watches the shims Launch started, to reap them.
var shims = sync.OnceValues(pidfd.NewSet)

// reap collects child pid, which has exited, and says how it ended.
func reap(pid int) error {
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
		return err
	}
	if ws.Exited() && ws.ExitStatus() == 0 {
		return nil
	}
	if ws.Signaled() {
		return fmt.Errorf("killed by %v", ws.Signal())
	}
	return fmt.Errorf("exit status %d", ws.ExitStatus())
}

// Launch starts a shim, serving no pod yet, and returns once it serves
// its socket. The shim runs in its own session, so neither ketchd's exit
// nor a signal to ketchd's process group reaches it.
func Launch(ctx context.Context, o LaunchOptions) (retErr error) {
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return err
	}
	ready, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer ready.Close()
	args := []string{"--dir", o.Dir, "--ready-fd", "3"}
	if o.Log != "" {
		args = append(args, "--log", o.Log)
	}
	cmd := exec.Command(o.Binary, args...)
	cmd.Dir = "/" // hold no mount of ketchd's working directory busy
	// One P: a shim mostly waits, and each P's caches cost memory (about
	// 0.25 MiB of RSS each, measured). GOGC 25: a shim's live heap is
	// small (about 2 MiB), and by default garbage grows to 4 MiB before
	// the first collection and to twice the live heap after; measured with
	// 110 pods, 16 a shim: 471 → 417 KiB PSS a pod.
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1", "GOGC=25")
	cmd.ExtraFiles = []*os.File{readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return fmt.Errorf("start shim: %w", err)
	}
	exited := make(chan error, 1)
	// While ketchd lives it is the shim's parent and must reap it; after a
	// restart the shim's new parent does. One epoll watches every shim
	// ketchd started, rather than a goroutine each, and reaps it by PID (a
	// child not yet reaped keeps its PID), so nothing of cmd is kept.
	pid := cmd.Process.Pid
	set, err := shims()
	watched := err == nil && set.Watch(pid, func() { exited <- reap(pid) })
	if !watched {
		go func() { exited <- pidfd.WaitCmd(cmd) }()
	}
	defer func() {
		switch {
		case retErr != nil:
			_ = cmd.Process.Kill() // by pidfd: never another process
		case watched:
			_ = cmd.Process.Release()
		}
	}()

	// The shim writes "\n" to the pipe once it serves, or why it failed.
	type answer struct {
		msg []byte
		err error
	}
	got := make(chan answer, 1)
	go func() {
		msg, err := io.ReadAll(ready)
		got <- answer{msg, err}
	}()
	select {
	case a := <-got:
		if a.err != nil || string(a.msg) != "\n" {
			werr := <-exited
			return fmt.Errorf("shim in %s did not start: %s (%v)", o.Dir, a.msg, werr)
		}
	case <-ctx.Done():
		return fmt.Errorf("start shim in %s: %w", o.Dir, ctx.Err())
	}
	return nil
}

// AddPod has the shim whose directory is shimDir serve pod id, whose
// directory is podDir; Connect to podDir then reaches it. When no shim
// serves shimDir, or it is ending, the error is errdefs.ErrUnavailable.
func AddPod(ctx context.Context, shimDir, id, podDir string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", filepath.Join(shimDir, SockFile))
	if err != nil {
		return fmt.Errorf("no shim serves %s: %w: %w", shimDir, errdefs.ErrUnavailable, err)
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()
	_, err = api.NewGroupClient(c).AddPod(ctx, &api.AddPodRequest{Id: id, Dir: podDir})
	return fromTTRPC(err)
}

// Alive reports whether a shim serves the directory dir: one holds the
// lock on its pid file for as long as it lives.
func Alive(dir string) bool {
	f, err := os.Open(filepath.Join(dir, PIDFile))
	if err != nil {
		return false
	}
	defer f.Close()
	return unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB) == unix.EWOULDBLOCK
}

// Kill ends the shim of directory dir, if one lives, and returns once it
// has exited. It must serve no pod: whatever it serves dies with it.
func Kill(dir string) error {
	pid, err := PID(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil // it ended, or never began
	}
	if err != nil {
		return err
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil // gone already
	}
	defer unix.Close(fd)
	// Asked after the pidfd is open: if the shim lives now, the PID is
	// still its own.
	if !Alive(dir) {
		return nil
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && err != unix.ESRCH {
		return fmt.Errorf("kill the shim of %s: %w", dir, err)
	}
	return waitExit(context.Background(), fd, shimExitTimeout)
}
