// Package oci turns a CRI container request into an OCI runtime spec. It
// follows containerd's CRI plugin wherever kubelet or critest depend on a
// behaviour, so that pods act on ketch as they do on the runtime those
// tools are tested against; the places it differs say why.
package oci

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// DefaultPath is the PATH of a container whose image sets none: without it
// a shell in the container finds nothing.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// The annotations every container's spec carries, under containerd's names,
// so that tools reading specs (and the shim, which knows no CRI types) can
// tell what a container is.
const (
	AnnotationContainerType    = "io.kubernetes.cri.container-type"
	AnnotationContainerName    = "io.kubernetes.cri.container-name"
	AnnotationImageName        = "io.kubernetes.cri.image-name"
	AnnotationSandboxName      = "io.kubernetes.cri.sandbox-name"
	AnnotationSandboxNamespace = "io.kubernetes.cri.sandbox-namespace"
	AnnotationSandboxUID       = "io.kubernetes.cri.sandbox-uid"
	ContainerTypeContainer     = "container"
)

// Input is everything a container's runtime spec is made from.
type Input struct {
	ID     string // container ID
	Config *runtimeapi.ContainerConfig
	Pod    *runtimeapi.PodSandboxConfig
	Image  ocispec.ImageConfig // Entrypoint, Cmd, Env, WorkingDir, User
	// Rootfs is the mounted rootfs directory; the user and groups are
	// looked up in its etc/passwd and etc/group.
	Rootfs string
	// SandboxNS are the pins of the pod's namespaces the container joins,
	// by kind ("ipc", "uts", "pid", "user"); a pod without a PID 1 has
	// no "pid", and one on the node's network no "uts".
	SandboxNS map[string]string
	// NetNSPath is the pod's pinned network namespace; "" when the pod uses
	// the node's network.
	NetNSPath string
	// TargetPID is the host PID of the container whose PID namespace a
	// NamespaceMode_TARGET container joins; 0 otherwise.
	TargetPID int
	// The pod's files, bind-mounted at /etc/hosts, /etc/resolv.conf and
	// /etc/hostname unless a config mount targets the same path; "" skips
	// one, a named file that is missing is an error (NotFound).
	HostsPath, ResolvConfPath, HostnamePath string
	// ShmPath is the pod's /dev/shm directory; "" gives the container a
	// private 64 MiB tmpfs.
	ShmPath      string
	CgroupDriver CgroupDriver
	// CgroupParent is the cgroupfs path or systemd slice the container's
	// cgroup goes under; "" is /ketch (cgroupfs) or system.slice (systemd).
	CgroupParent string
	// SeccompProfileRoot is what relative localhost seccomp profile paths
	// are relative to; kubelet itself sends absolute ones.
	SeccompProfileRoot string
}

// Spec returns the runtime spec. Bad input is an error wrapping
// errdefs.ErrInvalidArgument; a user or group the image does not define, a
// localhost seccomp profile, device or pod file that does not exist wrap
// errdefs.ErrNotFound; a host mount whose propagation cannot give what a
// mount asks, or an AppArmor profile on a node without AppArmor, wrap
// errdefs.ErrFailedPrecondition; an image volume cri has not mounted and CDI devices wrap
// errdefs.ErrNotImplemented. A container of a pod with a user namespace of
// its own joins it (UserNamespace). Spec creates a config mount's missing
// host directory, as kubelet expects of a runtime.
func Spec(in Input) (*specs.Spec, error) {
	if err := checkInput(in); err != nil {
		return nil, err
	}
	proc, err := process(in)
	if err != nil {
		return nil, err
	}
	linux, err := linuxSection(in)
	if err != nil {
		return nil, err
	}
	s := &specs.Spec{
		Version:     specs.Version,
		Root:        &specs.Root{Path: in.Rootfs, Readonly: securityContext(in).GetReadonlyRootfs()},
		Process:     proc,
		Linux:       linux,
		Annotations: annotations(in),
	}
	// In a user namespace that does not own the network namespace (a pod
	// on the node's network), the kernel refuses to mount sysfs.
	bindSys := hasNamespace(linux, specs.UserNamespace) && !hasNamespace(linux, specs.NetworkNamespace)
	if s.Mounts, s.Linux.RootfsPropagation, err = mounts(in, hasNamespace(linux, specs.CgroupNamespace), bindSys); err != nil {
		return nil, err
	}
	// A read-only /sys by a bind remount (runc's read-only paths), not by
	// its superblock: see defaultMounts.
	if !securityContext(in).GetPrivileged() && slices.ContainsFunc(s.Mounts, func(m specs.Mount) bool { return m.Destination == "/sys" && m.Type == "sysfs" }) {
		s.Linux.ReadonlyPaths = append(s.Linux.ReadonlyPaths, "/sys")
	}
	// The default seccomp profile allows syscalls by capability, so it is
	// made after the capabilities are final.
	if s.Linux.Seccomp, err = seccompProfile(in, s); err != nil {
		return nil, err
	}
	return s, nil
}

func checkInput(in Input) error {
	switch {
	case in.Config == nil:
		return fmt.Errorf("container config is missing: %w", errdefs.ErrInvalidArgument)
	case in.Pod == nil:
		return fmt.Errorf("pod config is missing: %w", errdefs.ErrInvalidArgument)
	case in.ID == "" || strings.ContainsAny(in.ID, "/:") || in.ID == "." || in.ID == "..":
		return fmt.Errorf("container id %q: %w", in.ID, errdefs.ErrInvalidArgument)
	case !filepath.IsAbs(in.Rootfs):
		return fmt.Errorf("rootfs %q is not an absolute path: %w", in.Rootfs, errdefs.ErrInvalidArgument)
	case NULField(in.Config) != "":
		// No path, argument or variable can carry one to the kernel.
		return fmt.Errorf("container config field %s holds a NUL byte: %w", NULField(in.Config), errdefs.ErrInvalidArgument)
	case len(in.Config.GetCDIDevices()) > 0:
		// Starting without them would start a GPU job without its GPU.
		return fmt.Errorf("CDI devices are not supported: %w", errdefs.ErrNotImplemented)
	}
	// containerd refuses this too: a privileged container would undo every
	// restriction its pod was admitted with.
	if securityContext(in).GetPrivileged() && !in.Pod.GetLinux().GetSecurityContext().GetPrivileged() {
		return fmt.Errorf("privileged container in a pod that is not privileged: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

func securityContext(in Input) *runtimeapi.LinuxContainerSecurityContext {
	return in.Config.GetLinux().GetSecurityContext()
}

func process(in Input) (*specs.Process, error) {
	args, err := Command(in.Config, in.Image)
	if err != nil {
		return nil, err
	}
	env, err := environment(in)
	if err != nil {
		return nil, err
	}
	cwd, err := workingDir(in.Config, in.Image)
	if err != nil {
		return nil, err
	}
	sc := securityContext(in)
	user, err := processUser(in.Rootfs, sc, in.Image.User)
	if err != nil {
		return nil, err
	}
	caps, err := capabilities(sc)
	if err != nil {
		return nil, err
	}
	apparmor, err := apparmorProfile(sc)
	if err != nil {
		return nil, err
	}
	p := &specs.Process{
		Terminal:        in.Config.GetTty(),
		Args:            args,
		Env:             env,
		Cwd:             cwd,
		User:            user,
		Capabilities:    caps,
		NoNewPrivileges: sc.GetNoNewPrivs(),
		ApparmorProfile: apparmor,
	}
	if r := in.Config.GetLinux().GetResources(); r != nil {
		adj := int(r.GetOomScoreAdj())
		if adj < -1000 || adj > 1000 {
			return nil, fmt.Errorf("oom_score_adj %d is outside [-1000, 1000]: %w", adj, errdefs.ErrInvalidArgument)
		}
		p.OOMScoreAdj = &adj
	}
	return p, nil
}

// Command returns the argv the container runs: the config's command and
// args override the image's entrypoint and cmd as Docker defined it, and as
// kubelet's command/args documentation promises.
func Command(cfg *runtimeapi.ContainerConfig, img ocispec.ImageConfig) ([]string, error) {
	command, args := cfg.GetCommand(), cfg.GetArgs()
	if len(command) == 0 {
		if len(args) == 0 {
			args = img.Cmd
		}
		// `ENTRYPOINT [""]` is how a Dockerfile clears an inherited
		// entrypoint.
		if len(img.Entrypoint) != 1 || img.Entrypoint[0] != "" {
			command = img.Entrypoint
		}
	}
	argv := append(slices.Clone(command), args...)
	if len(argv) == 0 {
		return nil, fmt.Errorf("no command: neither the container config nor the image names one: %w", errdefs.ErrInvalidArgument)
	}
	if argv[0] == "" {
		return nil, fmt.Errorf("command %q starts with an empty name: %w", argv, errdefs.ErrInvalidArgument)
	}
	return argv, nil
}

// environment layers, as containerd does, a default PATH and HOSTNAME under
// the image's variables and the config's on top, each replacing an earlier
// value of its name in place.
func environment(in Input) ([]string, error) {
	hostname := in.Pod.GetHostname()
	if hostname == "" {
		// A host-network pod may name no hostname: it has the node's.
		var err error
		if hostname, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("hostname: %w", err)
		}
	}
	env := []string{DefaultPath, "HOSTNAME=" + hostname}
	env = mergeEnv(env, in.Image.Env)
	for _, kv := range in.Config.GetEnvs() {
		if kv.GetKey() == "" || strings.Contains(kv.GetKey(), "=") {
			return nil, fmt.Errorf("env %q: not a variable name: %w", kv.GetKey(), errdefs.ErrInvalidArgument)
		}
		env = mergeEnv(env, []string{kv.GetKey() + "=" + string(kv.GetValue())})
	}
	return env, nil
}

// mergeEnv sets each of overrides in env. An entry without "=" unsets its
// name, which is how an image config removes an inherited variable.
func mergeEnv(env, overrides []string) []string {
	for _, o := range overrides {
		name, _, set := strings.Cut(o, "=")
		i := slices.IndexFunc(env, func(e string) bool { return strings.HasPrefix(e, name+"=") })
		switch {
		case !set && i >= 0:
			env = slices.Delete(env, i, i+1)
		case set && i >= 0:
			env[i] = o
		case set:
			env = append(env, o)
		}
	}
	return env
}

func workingDir(cfg *runtimeapi.ContainerConfig, img ocispec.ImageConfig) (string, error) {
	cwd := cfg.GetWorkingDir()
	if cwd == "" {
		cwd = img.WorkingDir
	}
	if cwd == "" {
		return "/", nil
	}
	// runc refuses a relative cwd; saying so here names the field.
	if !filepath.IsAbs(cwd) {
		return "", fmt.Errorf("working_dir %q is not an absolute path: %w", cwd, errdefs.ErrInvalidArgument)
	}
	return cwd, nil
}

// annotations passes the config's annotations on, so that the shim can read
// ketch's own (ketch.dev/init, ketch.dev/result) from the spec. containerd
// passes only an allow-listed few; ketch passes all but runc's
// org.systemd.property.* ones, which would let any pod author set
// properties of its container's systemd unit.
func annotations(in Input) map[string]string {
	a := make(map[string]string, len(in.Config.GetAnnotations())+6)
	for k, v := range in.Config.GetAnnotations() {
		if !strings.HasPrefix(k, "org.systemd.property.") {
			a[k] = v
		}
	}
	image := in.Config.GetImage().GetUserSpecifiedImage()
	if image == "" {
		image = in.Config.GetImage().GetImage()
	}
	// Set last, so that a config cannot pass itself off as something else.
	a[AnnotationContainerType] = ContainerTypeContainer
	a[AnnotationContainerName] = in.Config.GetMetadata().GetName()
	a[AnnotationImageName] = image
	a[AnnotationSandboxName] = in.Pod.GetMetadata().GetName()
	a[AnnotationSandboxNamespace] = in.Pod.GetMetadata().GetNamespace()
	a[AnnotationSandboxUID] = in.Pod.GetMetadata().GetUid()
	return a
}

// NULField names the first string or bytes field of a CRI message, at any
// depth, that holds a NUL byte; "" when none does.
func NULField(m proto.Message) string { return nulField(m.ProtoReflect()) }

func nulField(m protoreflect.Message) (name string) {
	check := func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch fd.Kind() {
		case protoreflect.StringKind:
			if strings.ContainsRune(v.String(), 0) {
				name = string(fd.Name())
			}
		case protoreflect.BytesKind:
			if bytes.IndexByte(v.Bytes(), 0) >= 0 {
				name = string(fd.Name())
			}
		case protoreflect.MessageKind, protoreflect.GroupKind:
			name = nulField(v.Message())
		}
		return name == ""
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			for i := 0; i < v.List().Len() && name == ""; i++ {
				check(fd, v.List().Get(i))
			}
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if strings.ContainsRune(k.String(), 0) || !check(fd.MapValue(), mv) {
					name = string(fd.Name())
					return false
				}
				return true
			})
		default:
			check(fd, v)
		}
		return name == ""
	})
	return name
}
