// Package sandbox runs pods. A pod is served by a ketch-shim, which serves
// up to Options.PodsPerShim pods (shims.go), and has a network
// namespace pinned under <state>/netns and networked through CNI, and IPC
// and UTS namespaces pinned in <state>/pods/<id>, where the pod's files
// (hosts, resolv.conf, hostname, the /dev/shm tmpfs) live too. A pod whose
// containers share a PID namespace, or that has a user namespace of its
// own, also runs ketch-init in pause mode as its first container: PID 1 of
// the pod, holder of its PID, IPC and UTS namespaces. The user namespace
// (pinned at <state>/pods/<id>/userns) owns the pod's network namespace
// and the namespaces ketch-init makes, and its containers join it.
//
// Manager knows nothing of the CRI: package cri translates requests into a
// Spec and keeps the pod records.
package sandbox

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	"github.com/opencontainers/runtime-spec/specs-go"
	"go.opentelemetry.io/otel/trace"

	"ketch.dev/ketch/metrics"
	"ketch.dev/ketch/oci"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/sandbox/cni"
	"ketch.dev/ketch/tracing"
)

// Spec is what a pod is run from. Stop and Remove take the same Spec, so
// they need no state of their own: package cri keeps it with the pod.
type Spec struct {
	ID                   string
	Name, Namespace, UID string
	// Hostname of the pod; ignored with HostNetwork, where the pod has
	// the node's UTS namespace, as kubelet expects of host-network pods.
	Hostname    string
	HostNetwork bool
	HostPID     bool
	HostIPC     bool
	// SharedPID: the pod's containers share one PID namespace, whose PID
	// 1 is ketch-init (hasInit); else each has its own, or the node's.
	SharedPID    bool
	DNS          *DNS // nil: the node's resolv.conf
	PortMappings []cni.PortMapping
	// CgroupParent is where the pod's cgroups go: a path for cgroupfs, a
	// slice for systemd. Empty is Options.CgroupParent (cgroupfs) or
	// system.slice (systemd).
	CgroupParent string
	Sysctls      map[string]string
	// UserNS is the pod's own user namespace; nil: the node's.
	UserNS *UserNS
}

// UserNS is how a pod's user namespace maps its IDs to the node's: one
// mapping each, of container ID 0 up, as kubelet allocates them. The pod's
// network namespace belongs to it, and so do the PID, IPC and UTS
// namespaces its PID 1 makes; every container of the pod joins it.
type UserNS struct {
	UIDs, GIDs []specs.LinuxIDMapping
}

// DNS is the pod's resolv.conf.
type DNS struct {
	Servers, Searches, Options []string
}

// Pod is what Run made.
type Pod struct {
	PID       int          // ketch-init's host PID; 0 for a pod without one
	NetNSPath string       // "" with the node's network
	IPs       []netip.Addr // the pod's IPs, IPv4 first; none with the node's network
}

// sandboxOOMScoreAdj is what kubelet's pod infra container gets: the pod's
// PID 1 must be the last thing the OOM killer takes (the shim clamps it to
// what this host allows).
const sandboxOOMScoreAdj = -998

// Network attaches pods to the node's pod network; *cni.Manager is one.
type Network interface {
	Setup(ctx context.Context, podID, netnsPath string, pod cni.Pod) (cni.Result, error)
	Teardown(ctx context.Context, podID, netnsPath string, pod cni.Pod) error
}

// Options configure a Manager.
type Options struct {
	// StateDir is the volatile state: <StateDir>/pods/<id> and
	// <StateDir>/netns/<id>.
	StateDir string
	// RootDir is persistent: the sandbox rootfs ketch-init runs from.
	RootDir      string
	ShimBinary   string
	InitBinary   string
	CgroupDriver oci.CgroupDriver
	// CgroupParent holds the cgroups of pods that name no parent
	// (cgroupfs), so that ketch's cgroups never litter the root of a
	// hierarchy.
	CgroupParent string
	// ShmSize is the size of each pod's /dev/shm in bytes.
	ShmSize int64
	// PodsPerShim bounds the pods one shim serves; 0 is
	// DefaultPodsPerShim.
	PodsPerShim int
	Network     Network
}

// Manager runs, stops and removes pods. It is safe for concurrent use;
// calls for one pod are serialised.
type Manager struct {
	o      Options
	rootfs string
	pool   *shimPool

	mu sync.Mutex
	// shims holds the open connection to each pod's shim, made at Run or
	// on first use after a restart, by pod ID; guarded by mu.
	shims map[string]*shim.Client
	// pods holds a lock per pod ID in use, so that Run, Stop and Remove of
	// one pod never interleave; guarded by mu.
	pods map[string]*podLock
	// ports holds the sockets that reserve each running pod's host ports
	// (ports.go); guarded by mu.
	ports map[string][]int

	// countsMu guards removedCounts, the ketch-init counts of the pods
	// removed since ketchd started, and makes folding a pod's counts into
	// it one step for InitCounts.
	countsMu      sync.Mutex
	removedCounts shim.InitCounts

	// lost is called when a connection to a pod's shim ends (NotifyShimLost).
	lost atomic.Pointer[func(podID string)]
}

type podLock struct {
	mu    sync.Mutex
	users int // guarded by Manager.mu
}

// maxSocketPath is what fits in sockaddr_un.sun_path with its NUL.
const maxSocketPath = 107

// New prepares the sandbox rootfs and returns a Manager.
func New(o Options) (*Manager, error) {
	// A shim's sockets are <state>/shims/<16-hex id>/shim.sock and
	// io.sock; the kernel would refuse them later with an unclear error.
	if n := len(filepath.Join(o.StateDir, "shims", fmt.Sprintf("%016d", 0), shim.SockFile)); n > maxSocketPath {
		return nil, fmt.Errorf("state dir %s is too long: shim sockets would be %d bytes, unix sockets take %d: %w",
			o.StateDir, n, maxSocketPath, errdefs.ErrInvalidArgument)
	}
	for _, b := range []string{o.ShimBinary, o.InitBinary} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
	}
	if o.ShmSize <= 0 {
		return nil, fmt.Errorf("sandbox: shm size %d: %w", o.ShmSize, errdefs.ErrInvalidArgument)
	}
	// ketch's own directories: others may pass through, not list them,
	// since pods with a user namespace reach their rootfs below them as
	// "others"; each directory below is closed unless a pod needs it.
	for _, d := range []string{o.RootDir, filepath.Join(o.RootDir, "sandbox"), o.StateDir, filepath.Join(o.StateDir, "pods"), filepath.Join(o.StateDir, "containers")} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
		if err := os.Chmod(d, 0o711); err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
	}
	rootfs, err := installRootfs(filepath.Join(o.RootDir, "sandbox"), o.InitBinary)
	if err != nil {
		return nil, err
	}
	if o.PodsPerShim == 0 {
		o.PodsPerShim = DefaultPodsPerShim
	}
	if o.PodsPerShim < 0 {
		return nil, fmt.Errorf("sandbox: pods per shim %d: %w", o.PodsPerShim, errdefs.ErrInvalidArgument)
	}
	pool := &shimPool{dir: filepath.Join(o.StateDir, "shims"), binary: o.ShimBinary, perShim: o.PodsPerShim,
		shims: map[string]*shimEntry{}, podShim: map[string]string{}}
	if err := pool.load(filepath.Join(o.StateDir, "pods")); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	return &Manager{o: o, rootfs: rootfs, pool: pool, shims: map[string]*shim.Client{}, pods: map[string]*podLock{}, ports: map[string][]int{}}, nil
}

// InitBinary is the ketch-init of the sandbox rootfs, for containers that
// run it as their PID 1: a file that never changes while pods use it.
func (m *Manager) InitBinary() string { return filepath.Join(m.rootfs, "ketch-init") }

// Close drops the connections to the shims and the host port
// reservations; the pods keep running, and the next ketchd Adopts them.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, c := range m.shims {
		c.Close()
		delete(m.shims, id)
	}
	for id, fds := range m.ports {
		closeAll(fds)
		delete(m.ports, id)
	}
}

// Adopt takes over a running pod that an earlier ketchd started: it
// reserves the pod's host ports again.
func (m *Manager) Adopt(s Spec) error {
	defer m.lock(s.ID)()
	if err := m.reservePorts(s); err != nil {
		return fmt.Errorf("adopt pod %s: %w", s.ID, err)
	}
	return nil
}

// lock serialises the calls for pod id; the returned func unlocks.
func (m *Manager) lock(id string) func() {
	m.mu.Lock()
	l := m.pods[id]
	if l == nil {
		l = &podLock{}
		m.pods[id] = l
	}
	l.users++
	m.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		m.mu.Lock()
		if l.users--; l.users == 0 {
			delete(m.pods, id)
		}
		m.mu.Unlock()
	}
}

func (m *Manager) podDir(id string) string     { return filepath.Join(m.o.StateDir, "pods", id) }
func (m *Manager) netnsDir() string            { return filepath.Join(m.o.StateDir, "netns") }
func (m *Manager) netnsPath(id string) string  { return filepath.Join(m.netnsDir(), id) }
func (m *Manager) usernsPath(id string) string { return filepath.Join(m.podDir(id), usernsPin) }

// NetNSPath is where pod id's network namespace is pinned ("" with the
// node's network), for callers that run things in it.
func (m *Manager) NetNSPath(s Spec) string {
	if s.HostNetwork {
		return ""
	}
	return m.netnsPath(s.ID)
}

func cniPod(s Spec) cni.Pod {
	return cni.Pod{Namespace: s.Namespace, Name: s.Name, UID: s.UID, PortMappings: s.PortMappings}
}

// client returns the connection to pod id's shim, connecting on first use
// (after a ketchd restart). errdefs.ErrNotFound: no shim serves the pod.
func (m *Manager) client(ctx context.Context, id string) (*shim.Client, error) {
	m.mu.Lock()
	c := m.shims[id]
	if c != nil && c.Closed() {
		// The shim died (or a restart replaced it): ask the socket anew.
		delete(m.shims, id)
		c = nil
	}
	m.mu.Unlock()
	if c != nil {
		return c, nil
	}
	c, err := shim.Connect(ctx, m.podDir(id), func() { m.shimLost(id) }, shimClientOpts...)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old := m.shims[id]; old != nil && !old.Closed() {
		c.Close()
		return old, nil
	}
	m.shims[id] = c
	return c, nil
}

// NotifyShimLost has f called, with the pod's ID, when a pod's shim ends
// its connection: it died, or (a live one) dropped it. Whoever waits for
// the pod's exits learns it there, holding nothing meanwhile.
func (m *Manager) NotifyShimLost(f func(podID string)) { m.lost.Store(&f) }

// shimLost: pod id's shim ended its connection. One that no longer answers
// its socket died (Stop and Remove do not end it that way); a live one is
// connected to again, so that its death is seen later.
func (m *Manager) shimLost(id string) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), lostCheckTimeout)
		defer cancel()
		if _, err := m.client(ctx, id); errdefs.IsNotFound(err) {
			metrics.ShimDeaths.Inc()
		}
		if f := m.lost.Load(); f != nil {
			(*f)(id)
		}
	}()
}

// lostCheckTimeout bounds shimLost's connect.
const lostCheckTimeout = 10 * time.Second

// forget drops the connection to pod id's shim.
func (m *Manager) forget(id string) {
	m.mu.Lock()
	c := m.shims[id]
	delete(m.shims, id)
	m.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// gone tells whether pod id's shim died, once a call on c failed with err.
// A connection that ended does not prove it: ttrpc also closes one that
// carried a message over its size limit. So the socket is asked again, and
// only a shim that no longer answers it is gone; a live one serves the
// next call on a new connection.
func (m *Manager) gone(ctx context.Context, id string, c *shim.Client, err error) bool {
	if !c.Gone(err) {
		return false
	}
	m.mu.Lock()
	if m.shims[id] == c {
		delete(m.shims, id)
	}
	m.mu.Unlock()
	// Not c.Close(): the connection ended on its own, and its end must
	// still be reported (shimLost). A call can see it before the
	// connection's own close does, and closing it here then silenced the
	// report: the pod's other waits never started, and a container of a
	// killed shim stayed RUNNING.
	_, derr := m.client(ctx, id)
	return errdefs.IsNotFound(derr)
}

// redialPause spaces the retries of a call whose connection a live shim
// closed, so a shim that keeps doing so costs little.
const redialPause = 50 * time.Millisecond

var shimClientOpts = []ttrpc.ClientOpts{ttrpc.WithUnaryClientInterceptor(traceShimCall)}

// traceShimCall makes a span of a shim call made for a traced CRI call;
// the watchers' calls, made for no one (and Wait, which lasts as long as
// what it waits for), make none.
func traceShimCall(ctx context.Context, req *ttrpc.Request, resp *ttrpc.Response, info *ttrpc.UnaryClientInfo, invoke ttrpc.Invoker) error {
	if !trace.SpanFromContext(ctx).SpanContext().IsValid() || req.Method == "Wait" {
		return invoke(ctx, req, resp)
	}
	ctx, span := tracing.Start(ctx, "shim."+req.Method)
	err := invoke(ctx, req, resp)
	tracing.End(span, err)
	return err
}
