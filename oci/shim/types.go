package shim

import (
	"syscall"
	"time"

	"github.com/opencontainers/cgroups"
)

// Status is where a container is in its life.
type Status int

const (
	StatusUnknown Status = iota
	// StatusCreated: libcontainer has set the container up and its init
	// waits to exec the user's process.
	StatusCreated
	StatusRunning
	StatusStopped
)

func (s Status) String() string {
	switch s {
	case StatusCreated:
		return "created"
	case StatusRunning:
		return "running"
	case StatusStopped:
		return "stopped"
	}
	return "unknown"
}

// State is a container as the shim sees it.
type State struct {
	ID        string
	Status    Status
	Pid       int
	StartedAt time.Time // zero until started
	Exit      *Exit     // set once Status is StatusStopped
}

// Started is when a container's program started, and its host PID.
type Started struct {
	At  time.Time
	Pid int
}

// ContainerOptions say how an app container's stdio is wired.
type ContainerOptions struct {
	LogPath   string // the CRI log file; "" discards the output
	LogDir    string // the pod's log directory: LogPath never leads out of it
	Stdin     bool   // keep stdin open for attach
	StdinOnce bool   // close stdin when the first attach ends
	ResultCap int    // keep up to this many bytes of stdout as the result; 0: none
	// Init: the program is ketch-init in init mode, which has installed
	// its signal handlers once it has started the container's own
	// program; StartContainer returns only then.
	Init bool
}

// Exit is how a container's init ended.
type Exit struct {
	// Code is the exit code, or 128+Signal when a signal ended the process
	// (what shells report and kubelet shows).
	Code   int            `json:"code"`
	Signal syscall.Signal `json:"signal,omitempty"`
	At     time.Time      `json:"at"`
	// OOMKilled: the kernel's OOM killer ended a process of the
	// container's cgroup, told by the cgroup's own count, never guessed
	// from a 137.
	OOMKilled bool `json:"oom_killed,omitempty"`
	// Result is the stdout kept for a container created with a result cap,
	// recorded with the exit in the same atomic write; Truncated says that
	// the output went on past the cap.
	Result    []byte `json:"result,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`
}

// Stats is a cgroup's usage and settings at one moment: a container's, or
// a pod's whole cgroup.
type Stats struct {
	At       time.Time
	Cgroup   cgroups.Stats // as the cgroup library reads either version
	OOMKills uint64
	// Of a container's processes, from /proc; zero for a pod.
	FileDescriptors, Sockets, Threads uint64
	OpenFilesLimit                    uint64 // PID 1's soft RLIMIT_NOFILE
	// The cgroup's settings.
	CPUShares, CPUPeriod uint64
	CPUQuota             int64 // -1: none
	MemoryReservation    uint64
	// NetDev is, for the sandbox, /proc/net/dev as its PID 1 sees it: the
	// counters of the pod's network namespace.
	NetDev []byte
}

// ExecResult is what a command run by ExecSync did.
type ExecResult struct {
	Stdout, Stderr []byte
	ExitCode       int
	TimedOut       bool
}
