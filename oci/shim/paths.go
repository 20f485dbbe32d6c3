package shim

import "ketch.dev/ketch/oci/runc"

// The files of a shim and of the pods it serves (the tree in doc.go).
const (
	// In the shim's directory (<state>/shims/<shim-id>): the PID file and
	// the ttrpc socket, which serves the Group API and every pod's Shim
	// API.
	PIDFile  = "shim.pid"
	SockFile = "shim.sock"
	// ShimLink, in a pod's directory, links to the directory of the shim
	// that serves the pod.
	ShimLink = "shim"
	// StateDir, in a pod's directory, holds libcontainer's state of each
	// of the pod's containers.
	StateDir = "libcontainer"
	// IOSockFile, in the shim's directory, is its stream socket: each
	// connection is one exec or
	// attach session whose stdio travels as descriptors (SCM_RIGHTS), so no
	// byte of it passes through a second copy in the shim. ttrpc carries no
	// descriptors, hence a socket of its own.
	IOSockFile = "io.sock"
)

// PodMetadata is the ttrpc metadata key that names the pod a Shim API
// call is for.
const PodMetadata = "ketch-pod"

// ValidID accepts the ids libcontainer accepts, and no path tricks.
func ValidID(id string) bool { return runc.ValidID(id) }
