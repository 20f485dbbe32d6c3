// Command ketchd is the ketch node daemon: the CRI v1 endpoint kubelet,
// crictl and critest talk to. It only wires the packages together.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	clog "github.com/containerd/log"
	"google.golang.org/grpc"

	"ketch.dev/ketch/cri"
	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/image"
	"ketch.dev/ketch/metrics"
	"ketch.dev/ketch/oci"
	"ketch.dev/ketch/preflight"
	"ketch.dev/ketch/sandbox"
	"ketch.dev/ketch/sandbox/cni"
	"ketch.dev/ketch/tracing"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// started is when the process began: how long a restart leaves kubelet
// unserved is the operator's question.
var started = time.Now()

func main() {
	err := run()
	if errors.Is(err, errCheckFailed) {
		os.Exit(1)
	}
	if err != nil {
		slog.Error("ketchd failed", "err", err)
		os.Exit(1)
	}
}

// errCheckFailed is `ketchd check` finding that ketch cannot run here; the
// checks' lines have said why.
var errCheckFailed = errors.New("a check failed")

func run() error {
	configPath := flag.String("config", "/etc/ketch/config.toml", "config file (optional; every field has a default)")
	socket := flag.String("socket", "", "CRI socket path (overrides the config)")
	root := flag.String("root", "", "persistent state directory (overrides the config)")
	state := flag.String("state", "", "volatile state directory (overrides the config)")
	hostsDir := flag.String("registry-config-path", "", "directory of <host>/hosts.toml registry configs (overrides the config)")
	logLevel := flag.String("log-level", "", "debug, info, warn or error (overrides the config)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("ketchd", version)
		return nil
	}
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	cfg, err := loadConfig(*configPath, explicit)
	if err != nil {
		return err
	}
	override(&cfg.Socket, *socket)
	override(&cfg.Root, *root)
	override(&cfg.State, *state)
	override(&cfg.Image.RegistryConfigPath, *hostsDir)
	override(&cfg.LogLevel, *logLevel)
	if flag.Arg(0) == "check" {
		return check(cfg)
	}
	if flag.NArg() > 0 {
		return fmt.Errorf("unknown command %q: ketchd runs the daemon, ketchd check checks the node", flag.Arg(0))
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return fmt.Errorf("log level %q: %w", cfg.LogLevel, err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch cfg.LogFormat {
	case "text", "":
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, opts)))
	case "json":
		slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, opts)))
		// containerd's libraries log through logrus: JSON lines too.
		_ = clog.SetFormat(clog.JSONFormat)
	default:
		return fmt.Errorf("log format %q: want text or json", cfg.LogFormat)
	}
	// containerd's libraries log through logrus; keep their chatter (a
	// localhost registry "will try HTTPS first"...) to the debug level.
	if level > slog.LevelDebug {
		_ = clog.SetLevel("warn")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	stopTracing, err := tracing.Setup(ctx, cfg.Tracing, version)
	if err != nil {
		return err
	}
	defer func() {
		// What is buffered goes out; a collector that is gone costs this.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := stopTracing(ctx); err != nil {
			slog.Warn("tracing: spans not sent", "err", err)
		}
	}()

	// Where AppArmor runs, containers get ketch's default profile.
	if err := oci.LoadAppArmorProfile(); err != nil {
		return err
	}
	images, err := image.Open(ctx, image.Options{
		Root:                   filepath.Join(cfg.Root, "image"),
		HostsDir:               cfg.Image.RegistryConfigPath,
		MaxConcurrentDownloads: cfg.Image.MaxConcurrentDownloads,
		ProgressTimeout:        cfg.Image.PullProgressTimeout.Duration,
	})
	if err != nil {
		return err
	}
	defer images.Close()
	imagesOpened := time.Since(started)

	st, err := store.Open(filepath.Join(cfg.Root, "cri", "meta.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	storeOpened := time.Since(started)

	driver := cgroupDriver(cfg.CgroupDriver)
	network := cni.Config{
		ConfDir:  cfg.Network.CNIConfDir,
		BinDirs:  cfg.Network.CNIBinDirs,
		CacheDir: filepath.Join(cfg.Root, "cni"),
	}
	pods, err := sandbox.New(sandbox.Options{
		StateDir:     cfg.State,
		RootDir:      cfg.Root,
		ShimBinary:   besideSelf(cfg.Sandbox.ShimBinary, "ketch-shim"),
		InitBinary:   besideSelf(cfg.Sandbox.InitBinary, "ketch-init"),
		CgroupDriver: driver,
		CgroupParent: cfg.Sandbox.CgroupParent,
		ShmSize:      cfg.Sandbox.ShmSize,
		PodsPerShim:  cfg.Sandbox.PodsPerShim,
		Network:      cni.NewManager(network),
	})
	if err != nil {
		return err
	}
	defer pods.Close()

	features := oci.ProbeFeatures()
	slog.Info("kernel features", "userNamespaces", features.UserNamespaces, "recursiveReadOnlyMounts", features.RecursiveReadOnlyMounts)
	srv, err := cri.New(cri.Config{Version: version, CgroupDriver: driver, RuntimeHandlers: cfg.RuntimeHandlers,
		ImageRoot: filepath.Join(cfg.Root, "image"), RootDir: cfg.Root, StateDir: cfg.State,
		StreamAddress: cfg.StreamAddress, StreamTLSCert: cfg.StreamTLSCert, StreamTLSKey: cfg.StreamTLSKey,
		StatsPeriod:    cfg.StatsPeriod.Duration,
		UserNamespaces: features.UserNamespaces, RecursiveReadOnlyMounts: features.RecursiveReadOnlyMounts,
		Workflow: cri.WorkflowConfig{
			InitAlways:   cfg.Workflow.Init == "always",
			InitBinary:   pods.InitBinary(),
			KillGrace:    cfg.Workflow.KillGrace.Duration,
			ResultCap:    cfg.Workflow.ResultCap,
			SidecarGrace: cfg.Workflow.SidecarGrace.Duration,
		}},
		images, network, st, pods, containers{pods})
	if err != nil {
		return err
	}
	defer srv.Close()
	slog.SetDefault(slog.New(srv.LogHandler(slog.Default().Handler())))
	if cfg.MetricsAddress != "" {
		// Not fatal: a node's pods matter more than its metrics.
		if addr, err := metrics.Serve(ctx, cfg.MetricsAddress, srv, pods); err != nil {
			slog.Error("metrics not served", "address", cfg.MetricsAddress, "err", err)
		} else {
			slog.Info("metrics serving", "address", addr.String())
		}
	}
	g := grpc.NewServer(cri.ServerOptions()...)
	srv.Register(g)

	l, err := listen(cfg.Socket, cfg.SocketGID)
	if err != nil {
		return err
	}
	slog.Info("ketchd serving", "after", time.Since(started), "images_opened", imagesOpened, "store_opened", storeOpened, "socket", cfg.Socket, "version", version, "root", cfg.Root, "cgroup_driver", driver)
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	slog.Info("ketchd stopping: finishing calls in flight")
	// Calls in flight get a bounded time to finish; pods keep running.
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		g.Stop()
	}
	return nil
}

// besideSelf is path, or when empty the named binary in ketchd's own
// directory, where `make install` puts the three of them.
func besideSelf(path, name string) string {
	if path != "" {
		return path
	}
	self, err := os.Executable()
	if err != nil {
		return name
	}
	return filepath.Join(filepath.Dir(self), name)
}

func override(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

// cgroupDriver picks systemd when asked, or when unset and systemd runs the
// host (kubelet's default expectation there); cgroupfs otherwise.
// check is `ketchd check`: one line per check of the node, and an error
// when ketch cannot run here.
func check(cfg Config) error {
	rs := preflight.Run(preflight.Node{}, preflight.Config{
		CgroupDriver: string(cgroupDriver(cfg.CgroupDriver)), CNIConfDir: cfg.Network.CNIConfDir, CNIBinDirs: cfg.Network.CNIBinDirs,
		Socket: cfg.Socket, Root: cfg.Root, State: cfg.State,
		RegistryConfig: func() error { return image.CheckHostsConfig(context.Background(), cfg.Image.RegistryConfigPath) },
	})
	preflight.Print(os.Stdout, rs)
	if preflight.Failed(rs) {
		return errCheckFailed
	}
	return nil
}

func cgroupDriver(name string) oci.CgroupDriver {
	if name == "" {
		if _, err := os.Stat("/run/systemd/system"); err == nil {
			return oci.CgroupDriverSystemd
		}
	}
	if oci.CgroupDriver(name) == oci.CgroupDriverSystemd {
		return oci.CgroupDriverSystemd
	}
	return oci.CgroupDriverCgroupfs
}

// listen opens the CRI socket with mode 0660, owned by root and group gid
// (root's with 0). A socket file left by a ketchd that died is replaced;
// one a live ketchd answers on is not, and anything else at the path (a
// file, a symlink) is refused rather than removed.
func listen(path string, gid int) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another process is serving %s", path)
	}
	switch fi, err := os.Lstat(path); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, err
	case fi.Mode().Type() != os.ModeSocket:
		return nil, fmt.Errorf("%s is a %v, not a socket: not removing it", path, fi.Mode().Type())
	default:
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// The umask keeps the socket from being reachable by others between
	// listen and chmod.
	old := syscall.Umask(0o117)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chown(path, 0, gid); err != nil {
		l.Close()
		return nil, fmt.Errorf("chown socket: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return l, nil
}

// containers is sandbox.Manager as cri's Containers: a pod's shim as the
// interface cri calls it through.
type containers struct{ *sandbox.Manager }

func (c containers) Shim(ctx context.Context, podID string) (cri.Shim, error) {
	sh, err := c.Manager.Shim(ctx, podID)
	if err != nil {
		return nil, err // not a nil *shim.Client in a non-nil interface
	}
	return sh, nil
}
