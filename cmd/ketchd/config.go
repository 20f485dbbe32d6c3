package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/pelletier/go-toml/v2"

	"ketch.dev/ketch/sandbox"
	"ketch.dev/ketch/tracing"
)

// Config is /etc/ketch/config.toml. Every field has a working default, so the
// file is optional; contrib/config.toml shows them all.
type Config struct {
	// Socket is the CRI endpoint kubelet and crictl dial.
	Socket string `toml:"socket"`
	// SocketGID is the group that may use the socket besides root.
	SocketGID int `toml:"socket_gid"`
	// Root holds persistent state: images, snapshots, metadata.
	Root string `toml:"root"`
	// State holds volatile state: sockets, per-pod directories.
	State string `toml:"state"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
	// LogFormat is text (logfmt) or json, one object a line.
	LogFormat string `toml:"log_format"`
	// CgroupDriver is "cgroupfs" or "systemd"; empty picks systemd when
	// systemd runs the host, as kubelet's default expects.
	CgroupDriver string `toml:"cgroup_driver"`

	// RuntimeHandlers are the runtime handler names pods may ask for
	// besides the default "".
	RuntimeHandlers []string `toml:"runtime_handlers"`
	// StreamAddress is where exec, attach and port-forward sessions are
	// served: loopback by default, as kubelet proxies them.
	StreamAddress string `toml:"stream_address"`
	// StreamTLSCert and StreamTLSKey serve the sessions over TLS; an
	// address off loopback needs them.
	StreamTLSCert string `toml:"stream_tls_cert"`
	StreamTLSKey  string `toml:"stream_tls_key"`
	// MetricsAddress serves Prometheus metrics on /metrics; "" serves none.
	MetricsAddress string `toml:"metrics_address"`
	// StatsPeriod is how often ketchd reads the figures of every running
	// container and pod for the stats lists, which answer from them; "0s"
	// reads them at each call instead.
	StatsPeriod Duration `toml:"stats_period"`

	Image    ImageConfig    `toml:"image"`
	Network  NetworkConfig  `toml:"network"`
	Sandbox  SandboxConfig  `toml:"sandbox"`
	Workflow WorkflowConfig `toml:"workflow"`
	Tracing  tracing.Config `toml:"tracing"`
}

type WorkflowConfig struct {
	// Init is "annotated" (ketch-init only in front of containers that ask,
	// with ketch.dev/init) or "always".
	Init string `toml:"init"`
	// KillGrace is what ketch-init gives a command's leftovers between
	// TERM and KILL.
	KillGrace Duration `toml:"kill_grace"`
	// ResultCap is the bytes of stdout kept as a container's result, at
	// most maxResultCap.
	ResultCap int `toml:"result_cap"`
	// SidecarGrace is what sidecars get between their stop signal and KILL
	// once the pod's main container (ketch.dev/main) has exited.
	SidecarGrace Duration `toml:"sidecar_grace"`
}

// Duration is a time.Duration written as "2s" in the config file.
type Duration struct{ time.Duration }

// maxPodsPerShim bounds sandbox.pods_per_shim: a shim's death costs every
// pod it serves.
const maxPodsPerShim = 64

// maxResultCap bounds workflow.result_cap: a result comes from the shim in
// one ttrpc message, and ttrpc refuses one over 4 MiB.
const maxResultCap = 1 << 20

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	d.Duration = v
	return err
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

type SandboxConfig struct {
	// ShimBinary and InitBinary default to ketch-shim and ketch-init
	// beside the ketchd executable; ketch-runc sits beside the shim.
	ShimBinary string `toml:"shim_binary"`
	InitBinary string `toml:"init_binary"`
	// ShmSize is the size of each pod's /dev/shm in bytes.
	ShmSize int64 `toml:"shm_size"`
	// CgroupParent holds the cgroups of pods that name no cgroup parent
	// (cgroupfs driver; kubelet always names one).
	CgroupParent string `toml:"cgroup_parent"`
	// PodsPerShim bounds the pods one shim process serves: the shim's
	// memory is shared by them, and its death costs them all.
	PodsPerShim int `toml:"pods_per_shim"`
}

type ImageConfig struct {
	// RegistryConfigPath holds containerd-compatible <host>/hosts.toml files.
	RegistryConfigPath string `toml:"registry_config_path"`
	// MaxConcurrentDownloads bounds the parallel layer downloads of a pull.
	MaxConcurrentDownloads int `toml:"max_concurrent_downloads"`
	// PullProgressTimeout ends a pull that received nothing for this long;
	// "0s" never does.
	PullProgressTimeout Duration `toml:"pull_progress_timeout"`
}

type NetworkConfig struct {
	CNIConfDir string   `toml:"cni_conf_dir"`
	CNIBinDirs []string `toml:"cni_bin_dirs"`
}

func defaultConfig() Config {
	return Config{
		Socket:    "/run/ketch/ketch.sock",
		Root:      "/var/lib/ketch",
		State:     "/run/ketch",
		LogLevel:  "info",
		LogFormat: "text",
		Image: ImageConfig{
			RegistryConfigPath:     "/etc/ketch/certs.d",
			MaxConcurrentDownloads: 3,
			PullProgressTimeout:    Duration{5 * time.Minute},
		},
		RuntimeHandlers: []string{"ketch"},
		StreamAddress:   "127.0.0.1:0",
		MetricsAddress:  "127.0.0.1:9434",
		StatsPeriod:     Duration{10 * time.Second},
		Network: NetworkConfig{
			CNIConfDir: "/etc/cni/net.d",
			CNIBinDirs: []string{"/usr/lib/cni", "/opt/cni/bin"},
		},
		Sandbox: SandboxConfig{ShmSize: 64 << 20, CgroupParent: "/ketch", PodsPerShim: sandbox.DefaultPodsPerShim},
		Workflow: WorkflowConfig{
			Init:         "annotated",
			KillGrace:    Duration{2 * time.Second},
			ResultCap:    256 << 10,
			SidecarGrace: Duration{30 * time.Second},
		},
		Tracing: tracing.Config{SamplingRatio: 1},
	}
}

// loadConfig reads path over the defaults. A missing file is not an error
// unless the operator named it explicitly.
func loadConfig(path string, explicit bool) (Config, error) {
	cfg := defaultConfig()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		var unknown *toml.StrictMissingError
		if errors.As(err, &unknown) {
			return cfg, fmt.Errorf("config %s: unknown fields:\n%s", path, unknown.String())
		}
		return cfg, fmt.Errorf("parse config %s: %w", path, err)
	}
	switch cfg.CgroupDriver {
	case "", "cgroupfs", "systemd":
	default:
		return cfg, fmt.Errorf("config %s: cgroup_driver %q is neither cgroupfs nor systemd", path, cfg.CgroupDriver)
	}
	switch w := cfg.Workflow; {
	case w.Init != "annotated" && w.Init != "always":
		return cfg, fmt.Errorf("config %s: workflow.init %q is neither annotated nor always", path, w.Init)
	case w.ResultCap < 1 || w.ResultCap > maxResultCap:
		return cfg, fmt.Errorf("config %s: workflow.result_cap %d is not between 1 byte and 1 MiB", path, w.ResultCap)
	case w.KillGrace.Duration <= 0 || w.SidecarGrace.Duration <= 0:
		return cfg, fmt.Errorf("config %s: workflow.kill_grace and workflow.sidecar_grace must be positive", path)
	}
	if cfg.StatsPeriod.Duration < 0 {
		return cfg, fmt.Errorf("config %s: stats_period is negative", path)
	}
	if cfg.SocketGID < 0 {
		return cfg, fmt.Errorf("config %s: socket_gid %d is negative", path, cfg.SocketGID)
	}
	if cfg.Sandbox.ShmSize < 1<<20 {
		return cfg, fmt.Errorf("config %s: sandbox.shm_size must be at least 1 MiB", path)
	}
	if n := cfg.Sandbox.PodsPerShim; n < 1 || n > maxPodsPerShim {
		return cfg, fmt.Errorf("config %s: sandbox.pods_per_shim %d is not between 1 and %d", path, n, maxPodsPerShim)
	}
	if cfg.Image.PullProgressTimeout.Duration < 0 {
		return cfg, fmt.Errorf("config %s: image.pull_progress_timeout is negative", path)
	}
	if cfg.Image.MaxConcurrentDownloads < 1 {
		return cfg, fmt.Errorf("config %s: image.max_concurrent_downloads must be at least 1", path)
	}
	return cfg, nil
}
