package shim

import "ketch.dev/ketch/oci/runc"

// The files of a shim and of the pods it serves (the tree in doc.go).
const (
	// In the shim's directory (<state>/shims/<shim-id>), and in a pod's
	// directory (<state>/pods/<pod-id>): the PID file (shims only) and the
	// ttrpc socket.
	PIDFile  = "shim.pid"
	SockFile = "shim.sock"
	// ShimLink, in a pod's directory, links to the directory of the shim
	// that serves the pod.
	ShimLink = "shim"
	// StateDir, in a pod's directory, holds libcontainer's state of each
	// of the pod's containers.
	StateDir = "libcontainer"
	// IOSockFile is the shim's stream socket: each connection is one exec or
	// attach session whose stdio travels as descriptors (SCM_RIGHTS), so no
	// byte of it passes through a second copy in the shim. ttrpc carries no
	// descriptors, hence a socket of its own.
	IOSockFile = "io.sock"
)

// ValidID accepts the ids libcontainer accepts, and no path tricks.
func ValidID(id string) bool { return runc.ValidID(id) }
