package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	"ketch.dev/ketch/oci/runc"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/oci/shim/api"
)

// Options configure Serve.
type Options struct {
	Dir string // the shim's directory, /run/ketch/shims/<shim-id>
	// Ready, if set, gets one byte and is closed once the socket accepts
	// calls: Launch waits for it instead of polling the socket.
	Ready *os.File
	// Runc is ketch-runc; empty is the one beside this executable.
	Runc string
}

// group is the shim's set of pods: AddPod adds one, its Shutdown drops it,
// and the shim ends with the last. Every pod is served on the shim's two
// sockets, each call and session naming its pod (shim.PodMetadata,
// StreamRequest.Pod): a pod costs the shim no listener and, with
// ketchd's one connection a shim, no connection of its own.
type group struct {
	dir    string
	runc   string // ketch-runc
	reaper *reaper

	trim *time.Timer // hands memory back once calls that change pods settle

	mu sync.Mutex
	// pods by id; closing is set when the last one is dropped, and then
	// no pod is added. Guarded by mu.
	pods    map[string]*Service
	closing bool
	done    chan struct{} // closed once the last pod is dropped
}

// pod is the Service of pod id; NotFound when the shim does not serve it.
func (g *group) pod(id string) (*Service, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if s := g.pods[id]; s != nil {
		return s, nil
	}
	return nil, fmt.Errorf("pod %q: not served here: %w", id, errdefs.ErrNotFound)
}

// Serve runs the shim until the last pod it served has been shut down: it
// becomes the subreaper of its descendants, locks and writes
// <dir>/shim.pid, and serves the Group API on <dir>/shim.sock. Cancelling
// ctx stops serving but leaves the pods' processes running.
func Serve(ctx context.Context, o Options) error {
	// Before anything forks: an init reparented to a non-subreaper would
	// take its exit code to the host's PID 1.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become subreaper: %w", err)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return err
	}
	lock, err := lockPidFile(filepath.Join(o.Dir, shim.PIDFile))
	if err != nil {
		return err
	}
	defer lock.Close()
	l, err := listen(filepath.Join(o.Dir, shim.SockFile))
	if err != nil {
		return err
	}
	defer l.Close()
	streams, err := listen(filepath.Join(o.Dir, shim.IOSockFile))
	if err != nil {
		return err
	}
	defer streams.Close()

	if o.Runc == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		o.Runc = runc.Beside(exe)
	}
	if _, err := os.Stat(o.Runc); err != nil {
		return fmt.Errorf("the libcontainer helper: %w", err)
	}
	r := newReaper()
	stop := make(chan struct{})
	defer close(stop)
	go r.run(stop)

	g := &group{dir: o.Dir, runc: o.Runc, reaper: r, pods: map[string]*Service{}, done: make(chan struct{}),
		trim: time.AfterFunc(trimAfter, debug.FreeOSMemory)}
	defer g.trim.Stop()
	srv, err := ttrpc.NewServer(
		ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()),
		ttrpc.WithUnaryServerInterceptor(g.interceptor),
	)
	if err != nil {
		return err
	}
	api.RegisterGroupService(srv, g)
	api.RegisterShimService(srv, ttrpcService{g})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, l) }()
	go g.serveStreams(streams.(*net.UnixListener))
	slog.Info("serving", "dir", o.Dir, "pid", os.Getpid(), "runc", o.Runc)
	if o.Ready != nil {
		_, _ = o.Ready.Write([]byte{'\n'})
		o.Ready.Close()
	}

	select {
	case <-g.done:
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	}
	shutdownServer(srv)
	return nil
}

// shutdownServer stops srv once its replies are written; a caller still
// blocked in Wait is cut off after a bound.
func shutdownServer(srv *ttrpc.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
	}
}

// AddPod serves pod id, whose directory is dir, from now on.
func (g *group) AddPod(_ context.Context, r *api.AddPodRequest) (*api.AddPodResponse, error) {
	id, dir := r.GetId(), r.GetDir()
	if !shim.ValidID(id) || !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("pod %q in %q: %w", id, dir, errdefs.ErrInvalidArgument)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.closing:
		return nil, fmt.Errorf("the shim is ending: %w", errdefs.ErrUnavailable)
	case g.pods[id] != nil:
		return nil, fmt.Errorf("pod %s: %w", id, errdefs.ErrAlreadyExists)
	}
	// The link first: whoever finds the pod finds its shim.
	if err := atomicSymlink(g.dir, filepath.Join(dir, shim.ShimLink)); err != nil {
		return nil, fmt.Errorf("pod %s: %w", id, err)
	}
	svc := newService(id, dir, g.runc, g.reaper)
	g.pods[id] = svc
	svc.log.Info("serving pod", "dir", dir)
	return &api.AddPodResponse{}, nil
}

// drop stops serving pod id, whose Shutdown is done, and tells whether it
// was the last: the shim then ends once the reply is out, and its sockets
// and pid file go at once, so that no caller finds it.
func (g *group) drop(id string) (last bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.pods, id)
	if len(g.pods) == 0 && !g.closing {
		g.closing = true
		for _, f := range []string{shim.SockFile, shim.IOSockFile, shim.PIDFile} {
			if err := os.Remove(filepath.Join(g.dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
				slog.Warn("remove the shim's files", "err", err)
			}
		}
		close(g.done)
	}
	return g.closing
}

// atomicSymlink makes path a link to target, replacing what was there.
func atomicSymlink(target, path string) error {
	tmp := path + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// lockPidFile holds an exclusive lock on the pid file for the shim's life,
// so a second shim for the same pod fails instead of stealing the socket.
func lockPidFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("a shim already serves %s: %w", filepath.Dir(path), errdefs.ErrAlreadyExists)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// listen creates the socket with mode 0600 from the start: a chmod after
// listen would leave a window in which anyone could connect.
func listen(path string) (net.Listener, error) {
	// Only a dead shim leaves a socket; the pid file lock proves it is dead.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	old := unix.Umask(0o177)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, err
	}
	// Shutdown removes the socket itself; an unlink at Close could remove
	// the socket of the next shim of this pod.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	return l, nil
}

// trimAfter is how long after the last call that changed its pods (see
// changesPods) a shim collects its garbage and hands its free memory back
// to the kernel. A burst of pod starts leaves a shim with more garbage and
// free pages than all its pods hold; the runtime would collect it only at
// its next collection, which an idle shim (GOGC 25, little allocation)
// reaches at the forced one, two minutes on, and then hands pages back at
// the pace of its background scavenger. One collection of a shim's heap
// of a few MiB costs well under a millisecond. Measured with 110 pods,
// 32 a shim: see docs/architecture.md.
const trimAfter = time.Second

// changesPods are the calls after which a shim's memory is trimmed: the
// ones a pod's life makes a few of, not exec probes or stats, which come
// every few seconds for as long as pods run.
var changesPods = map[string]bool{
	"AddPod": true, "StartSandbox": true, "CreateContainer": true, "StartContainer": true,
	"DeleteContainer": true, "Shutdown": true,
}

// interceptor is the one place where errors become status codes: the
// handlers wrap errdefs sentinels and the client turns the codes back into
// them. It finds the pod a Shim call names (shim.PodMetadata; NotFound
// when the shim does not serve it), logs every call to the pod's log, and
// keeps a panic from ending the shim.
func (g *group) interceptor(ctx context.Context, unmarshal ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, method ttrpc.Method) (resp any, err error) {
	start := time.Now()
	log := slog.Default()
	defer func() {
		if p := recover(); p != nil {
			log.Error("panic", "method", info.FullMethod, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("%s: panic: %v: %w", info.FullMethod, p, errdefs.ErrInternal)
		}
		// Calls at debug: an exec probe makes one a second for as
		// long as its pod runs, and the log lives on the node's tmpfs.
		level := slog.LevelDebug
		if err != nil {
			level = slog.LevelWarn
		}
		log.Log(ctx, level, "call", "method", info.FullMethod, "duration", time.Since(start), "err", err)
		if err != nil {
			err = errgrpc.ToGRPC(err)
		}
	}()
	if changesPods[path.Base(info.FullMethod)] {
		defer g.trim.Reset(trimAfter)
	}
	if strings.HasPrefix(info.FullMethod, "/"+shimService+"/") {
		id, _ := ttrpc.GetMetadataValue(ctx, shim.PodMetadata)
		s, err := g.pod(id)
		if err != nil {
			return nil, err
		}
		log = s.log
		ctx = context.WithValue(ctx, serviceKey{}, s)
	}
	return method(ctx, unmarshal)
}

// shimService is the Shim API's ttrpc service name.
const shimService = "ketch.shim.v1.Shim"

type serviceKey struct{}

// ttrpcService adapts the Shim API to the Service of the pod each call
// names, which the interceptor found.
type ttrpcService struct{ g *group }

func service(ctx context.Context) *Service { return ctx.Value(serviceKey{}).(*Service) }

func (t ttrpcService) StartSandbox(ctx context.Context, r *api.StartSandboxRequest) (*api.StartSandboxResponse, error) {
	pid, err := service(ctx).StartSandbox(ctx, r.GetSpec())
	if err != nil {
		return nil, err
	}
	return &api.StartSandboxResponse{Pid: uint32(pid)}, nil
}

func (t ttrpcService) CreateContainer(ctx context.Context, r *api.CreateContainerRequest) (*api.CreateContainerResponse, error) {
	o := shim.ContainerOptions{LogPath: r.GetLogPath(), LogDir: r.GetLogDir(), Stdin: r.GetStdin(), StdinOnce: r.GetStdinOnce(), ResultCap: int(r.GetResultCap()), Init: r.GetInit()}
	if err := service(ctx).CreateContainer(ctx, r.GetId(), r.GetSpec(), o); err != nil {
		return nil, err
	}
	return &api.CreateContainerResponse{}, nil
}

func (t ttrpcService) StartContainer(ctx context.Context, r *api.StartContainerRequest) (*api.StartContainerResponse, error) {
	st, err := service(ctx).StartContainer(ctx, r.GetId())
	if err != nil {
		return nil, err
	}
	return &api.StartContainerResponse{StartedAtUnixNano: st.At.UnixNano(), Pid: uint32(st.Pid)}, nil
}

func (t ttrpcService) DeleteContainer(ctx context.Context, r *api.DeleteContainerRequest) (*api.DeleteContainerResponse, error) {
	if err := service(ctx).DeleteContainer(ctx, r.GetId()); err != nil {
		return nil, err
	}
	return &api.DeleteContainerResponse{}, nil
}

func (t ttrpcService) ReopenLog(ctx context.Context, r *api.ReopenLogRequest) (*api.ReopenLogResponse, error) {
	if err := service(ctx).ReopenLog(ctx, r.GetId()); err != nil {
		return nil, err
	}
	return &api.ReopenLogResponse{}, nil
}

func (t ttrpcService) ExecSync(ctx context.Context, r *api.ExecSyncRequest) (*api.ExecSyncResponse, error) {
	res, err := service(ctx).ExecSync(ctx, r.GetId(), r.GetArgs(), time.Duration(r.GetTimeoutNano()))
	if err != nil {
		return nil, err
	}
	return &api.ExecSyncResponse{Stdout: res.Stdout, Stderr: res.Stderr, ExitCode: int32(res.ExitCode), TimedOut: res.TimedOut}, nil
}

func (t ttrpcService) Update(ctx context.Context, r *api.UpdateRequest) (*api.UpdateResponse, error) {
	if err := service(ctx).Update(ctx, r.GetId(), r.GetResources()); err != nil {
		return nil, err
	}
	return &api.UpdateResponse{}, nil
}

func (t ttrpcService) State(ctx context.Context, r *api.StateRequest) (*api.StateResponse, error) {
	st, err := service(ctx).State(ctx, r.GetId())
	if err != nil {
		return nil, err
	}
	return stateToProto(st), nil
}

func (t ttrpcService) Kill(ctx context.Context, r *api.KillRequest) (*api.KillResponse, error) {
	sig := syscall.Signal(r.GetSignal())
	if sig <= 0 || sig > 64 {
		return nil, fmt.Errorf("signal %d: %w", r.GetSignal(), errdefs.ErrInvalidArgument)
	}
	if err := service(ctx).Kill(ctx, r.GetId(), sig, r.GetAll()); err != nil {
		return nil, err
	}
	return &api.KillResponse{}, nil
}

func (t ttrpcService) Wait(ctx context.Context, r *api.WaitRequest) (*api.WaitResponse, error) {
	e, err := service(ctx).Wait(ctx, r.GetId())
	if err != nil {
		return nil, err
	}
	return &api.WaitResponse{Exit: exitToProto(&e)}, nil
}

func (t ttrpcService) Stats(ctx context.Context, r *api.StatsRequest) (*api.StatsResponse, error) {
	st, err := service(ctx).Stats(ctx, r.GetId(), shim.StatsOptions{Pod: r.GetPod(), Full: r.GetFull()})
	if err != nil {
		return nil, err
	}
	return statsToProto(st)
}

func (t ttrpcService) Shutdown(ctx context.Context, _ *api.ShutdownRequest) (*api.ShutdownResponse, error) {
	if err := service(ctx).Shutdown(ctx); err != nil {
		return nil, err
	}
	return &api.ShutdownResponse{Last: t.g.drop(service(ctx).id)}, nil
}
