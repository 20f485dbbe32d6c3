// Package cri serves the CRI v1 RuntimeService and ImageService over gRPC. It
// validates each request, translates CRI types to the owning package's types
// and back, and leaves the work to image/, sandbox/ and oci/. Errors from
// those packages carry containerd errdefs sentinels; one interceptor
// (interceptor.go) turns them into gRPC codes.
package cri

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/cri/streaming"
	"ketch.dev/ketch/image"
	"ketch.dev/ketch/metrics"
	"ketch.dev/ketch/oci"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/sandbox"
)

//go:generate go tool mockgen -destination=mock_deps_test.go -package=cri . ImageStore,Network,Sandboxes,Containers,Shim

// ImageStore is what the ImageService needs of image.Store.
type ImageStore interface {
	// Pull fetches and unpacks ref and returns the image it names.
	Pull(ctx context.Context, ref string, auth *image.Auth) (image.Image, error)
	// Get finds an image by ID, ID prefix or reference; errdefs.ErrNotFound
	// when there is none.
	Get(ctx context.Context, ref string) (image.Image, error)
	// List returns every image.
	List(ctx context.Context) ([]image.Image, error)
	// Remove deletes the image ref names, with all its names; nil when
	// there is no such image.
	Remove(ctx context.Context, ref string) error
	// Usage is the disk the image store takes.
	Usage(ctx context.Context) (image.Usage, error)
	// Prepare mounts a fresh writable snapshot of image ref at target, keyed
	// by a container ID; Release unmounts and removes it (idempotent).
	Prepare(ctx context.Context, key, ref, target string, opts ...image.PrepareOpt) (image.Image, error)
	// View mounts image ref's file system read-only at target, keyed by
	// key, for an image volume; Release ends it too.
	View(ctx context.Context, key, ref, target string) (image.Image, error)
	Release(ctx context.Context, key, target string) error
	// WritableUsage is the disk a container's writable layer takes.
	WritableUsage(ctx context.Context, key string) (bytes, inodes uint64, err error)
}

// Network is the node's pod network as the runtime RPCs see it.
type Network interface {
	// Ready is nil once a CNI network config is loaded, otherwise why not.
	Ready() error
	// SetPodCIDRs keeps the node's pod CIDRs for the networks that
	// allocate from them; PodCIDRs returns them.
	SetPodCIDRs(cidrs []string) error
	PodCIDRs() ([]string, error)
}

// Sandboxes is what the pod RPCs need of sandbox.Manager. Stop and Remove
// take the Spec Run was given (rebuilt from the pod's record) and succeed
// when there is nothing left to stop or remove.
type Sandboxes interface {
	Run(ctx context.Context, s sandbox.Spec) (sandbox.Pod, error)
	Stop(ctx context.Context, s sandbox.Spec) error
	Remove(ctx context.Context, s sandbox.Spec) error
	// Ready reports whether the pod's PID 1 runs, or for a pod without
	// one, its shim.
	Ready(ctx context.Context, s sandbox.Spec) (bool, error)
	// Wait returns nil once the pod's PID 1 has exited or its shim is
	// gone, and ctx's error if ctx ends first.
	Wait(ctx context.Context, s sandbox.Spec) error
	// NotifyShimLost has f called when a pod's shim ends its connection
	// (it died, most likely); not when ketchd closes it.
	NotifyShimLost(f func(podID string))
	// Adopt takes over a pod an earlier ketchd ran.
	Adopt(s sandbox.Spec) error
	// Stats reads the pod's resource usage.
	Stats(ctx context.Context, s sandbox.Spec) (sandbox.Stats, error)
	// PortForward connects stream to a TCP port inside the pod.
	PortForward(ctx context.Context, s sandbox.Spec, port int32, stream io.ReadWriteCloser) error
	// Collect removes what belongs to no pod known reports.
	Collect(ctx context.Context, known func(id string) bool) error
}

// Containers is what the container RPCs need of sandbox.Manager: a
// container's directory, and its pod's shim, which every container call
// goes to but the three that must outlive a shim: a signal, a wait and a
// delete, which sandbox answers from what a dead shim left.
type Containers interface {
	// Paths are the pod's files and netns a container spec refers to.
	Paths(s sandbox.Spec) sandbox.PodPaths
	// ContainerRootfs is where container id's rootfs is mounted, in the
	// directory MakeContainerDir makes (rootGID: the host GID of the root of
	// its user namespace, or -1) and RemoveContainerDir removes;
	// ContainerDirs lists the IDs that have one.
	ContainerRootfs(id string) string
	MakeContainerDir(id string, rootGID int) error
	RemoveContainerDir(id string) error
	ContainerDirs() ([]string, error)
	// Shim is pod podID's shim; FailedPrecondition when the pod has none.
	Shim(ctx context.Context, podID string) (Shim, error)
	SignalContainer(ctx context.Context, podID, id string, sig syscall.Signal, all bool) error
	// WaitContainer returns the exit once recorded; sandbox.ErrShimGone
	// when the shim died before it recorded one.
	WaitContainer(ctx context.Context, podID, id string) (shim.Exit, error)
	DeleteContainer(ctx context.Context, podID, id string) error
}

// Shim is what the container RPCs ask of a pod's shim (a *shim.Client).
type Shim interface {
	CreateContainer(ctx context.Context, id string, spec *specs.Spec, o shim.ContainerOptions) error
	StartContainer(ctx context.Context, id string) (shim.Started, error)
	State(ctx context.Context, id string) (shim.State, error)
	// Stats reads the container's cgroup usage: with o.Full, every
	// figure cAdvisor's metrics need.
	Stats(ctx context.Context, id string, o shim.StatsOptions) (shim.Stats, error)
	ReopenLog(ctx context.Context, id string) error
	ExecSync(ctx context.Context, id string, args []string, timeout time.Duration) (shim.ExecResult, error)
	Update(ctx context.Context, id string, r *specs.LinuxResources) error
	// Exec and Attach run sessions with a client's streams; they return
	// the exit code of the command, or of the container.
	Exec(ctx context.Context, id string, args []string, st shim.Streams) (int, error)
	Attach(ctx context.Context, id string, st shim.Streams) (int, error)
}

// Config is what the server reports about the node it runs on.
type Config struct {
	Version      string // ketch's own version
	CgroupDriver oci.CgroupDriver
	// RuntimeHandlers are the handler names pods may ask for besides the
	// default "".
	RuntimeHandlers []string
	// ImageRoot is the image store's directory: the filesystem writable
	// layers live on, for stats.
	ImageRoot string
	// RootDir and StateDir are ketchd's persistent and volatile state, as
	// verbose Status reports them.
	RootDir, StateDir string
	// UserNamespaces: pods may ask for a user namespace of their own (on
	// the node's network too); RecursiveReadOnlyMounts: mounts may be
	// read-only all the way down. The kernel's say (oci.ProbeFeatures).
	UserNamespaces, RecursiveReadOnlyMounts bool
	// StreamAddress is where exec, attach and port-forward sessions are
	// served ("127.0.0.1:0": loopback, any free port); StreamTLSCert and
	// StreamTLSKey, when set, serve them over TLS, which an address off
	// loopback requires.
	StreamAddress               string
	StreamTLSCert, StreamTLSKey string
	// StatsPeriod is how often the figures of every running container
	// and ready pod are read for the stats lists; 0 reads them on demand.
	StatsPeriod time.Duration
	Workflow    WorkflowConfig
}

// WorkflowConfig is the node's `[workflow]` settings.
type WorkflowConfig struct {
	InitAlways   bool          // ketch-init in front of every container, not only annotated ones
	InitBinary   string        // the host's ketch-init, bind-mounted into containers
	KillGrace    time.Duration // what ketch-init gives leftovers between TERM and KILL
	ResultCap    int           // bytes of stdout kept as a result
	SidecarGrace time.Duration // what sidecars get between their stop signal and KILL
}

// Server implements runtimeapi.RuntimeServiceServer and ImageServiceServer.
// RPCs whose issues have not landed answer Unimplemented through the embedded
// types.
type Server struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	cfg        Config
	images     ImageStore
	network    Network
	store      *store.Store
	sandboxes  Sandboxes
	containers Containers

	// bg lives as long as the server: the goroutines that wait for exits
	// run under it, counted by watchers (addWatcher), while exits watches
	// the processes through pidfds until they exit (exits.go).
	bg         context.Context
	stop       context.CancelFunc
	watchersMu sync.Mutex // makes the count and Close's stop one step each
	watchers   sync.WaitGroup
	exits      exitSet // nil where the kernel has no epoll: every wait starts at once

	events    events
	listItems listItems // ListContainers' items, encoded

	cpuRates cpuRates   // the CPU usage rates of pods and containers
	stats    statsCache // the last figures of running containers and ready pods

	// creates lets a pod's container creates run together, and its stop
	// or remove wait until those under way are done.
	creates podGates

	stream *streaming.Server // hands out session URLs and serves them
}

// New builds a Server over its dependencies and starts watching the pods
// the store holds, so a pod whose PID 1 died while ketchd was down, or
// dies later, is reported NOTREADY.
func New(cfg Config, images ImageStore, network Network, st *store.Store, sb Sandboxes, ctrs Containers) (*Server, error) {
	bg, stop := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, images: images, network: network, store: st, sandboxes: sb, containers: ctrs, bg: bg, stop: stop}
	st.Notify(s.changed)
	sb.NotifyShimLost(s.shimLost)
	exits, err := newExitSet()
	if err != nil {
		slog.Warn("exits are waited for a goroutine each", "err", err)
	} else {
		s.exits = exits
	}
	start := time.Now()
	cctx, cancel := context.WithTimeout(bg, collectTimeout)
	err = s.collect(cctx)
	cancel()
	if err != nil {
		// Logged, not fatal: what could not be removed now is found again
		// at the next start, and the node's pods must be served meanwhile.
		slog.Error("clean-up of what a crash left", "err", err)
	}
	collected := time.Since(start)
	if err := s.recover(); err != nil {
		stop()
		return nil, err
	}
	took := time.Since(start)
	metrics.RecoverySeconds.Set(took.Seconds())
	slog.Info("state recovered", "took", took, "collect", collected)
	s.refreshStats()
	stream, err := streaming.Start(cfg.StreamAddress, cfg.StreamTLSCert, cfg.StreamTLSKey, sessionRuntime{s})
	if err != nil {
		s.Close()
		return nil, err
	}
	s.stream = stream
	return s, nil
}

// collectTimeout bounds the start-up clean-up (collect).
const collectTimeout = 2 * time.Minute

// Close stops the server's watchers and streaming sessions; pods keep
// running.
func (s *Server) Close() {
	s.watchersMu.Lock()
	s.stop()
	s.watchersMu.Unlock()
	if s.exits != nil {
		s.exits.Close()
	}
	if s.stream != nil {
		s.stream.Close()
	}
	s.watchers.Wait()
}

// ServerOptions are what a gRPC server serving a Server needs: the
// interceptors and the codec that sends ListContainers' encoded items as
// they are.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.UnaryInterceptor(UnaryInterceptor), grpc.StreamInterceptor(StreamInterceptor),
		grpc.ForceServerCodecV2(codec{encoding.GetCodecV2(proto.Name)})}
}

// Register serves s on g.
func (s *Server) Register(g *grpc.Server) {
	runtimeapi.RegisterRuntimeServiceServer(g, s)
	runtimeapi.RegisterImageServiceServer(g, s)
}

// podGates are one RWMutex per pod with creates or a stop under way.
type podGates struct {
	mu    sync.Mutex
	gates map[string]*podGate // guarded by mu
}

type podGate struct {
	sync.RWMutex
	users int // holders and waiters; guarded by podGates.mu
}

// enter takes pod id's gate, shared for a create, exclusive for a stop or
// remove, and returns its release.
func (g *podGates) enter(id string, exclusive bool) func() {
	g.mu.Lock()
	if g.gates == nil {
		g.gates = map[string]*podGate{}
	}
	gate := g.gates[id]
	if gate == nil {
		gate = &podGate{}
		g.gates[id] = gate
	}
	gate.users++
	g.mu.Unlock()
	lock, unlock := gate.RLock, gate.RUnlock
	if exclusive {
		lock, unlock = gate.Lock, gate.Unlock
	}
	lock()
	return func() {
		unlock()
		g.mu.Lock()
		if gate.users--; gate.users == 0 {
			delete(g.gates, id)
		}
		g.mu.Unlock()
	}
}

// CountStates counts the pods and containers the store holds by state,
// for ketchd's metrics.
func (s *Server) CountStates() (pods, containers map[string]int, err error) {
	sbs, err := s.store.ListSandboxes(store.SandboxFilter{})
	if err != nil {
		return nil, nil, err
	}
	ctrs, err := s.store.ListContainers(store.ContainerFilter{})
	if err != nil {
		return nil, nil, err
	}
	pods, containers = map[string]int{}, map[string]int{}
	for _, sb := range sbs {
		pods[string(sb.State)]++
	}
	for _, c := range ctrs {
		containers[string(c.State)]++
	}
	return pods, containers, nil
}
