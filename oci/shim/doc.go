// Package shim is ketchd's side of ketch-shim: the client, the types of
// its API, the wire of its stream socket, and the files a shim and the
// pods it serves keep, which ketchd reads without a shim. The shim itself
// is package oci/shim/server (command cmd/ketch-shim); ketchd links none of
// it, and no libcontainer: what a dead shim left is destroyed by running
// `ketch-runc destroy` (Destroy).
//
// A shim serves a bounded group of pods in its own session, so it
// outlives ketchd. It is the subreaper of every container process its
// helper, ketch-runc, starts and of everything else its pods leave behind,
// so it alone sees exit codes; it writes each exit to <pod dir>/exits/<id> (temp file,
// fsync, rename) before it reports it, so a ketchd that was down when a
// process died still learns how it ended (ReadExit). Every pod is served
// on the shim's sockets, each call naming its pod (PodMetadata), and
// ketchd keeps one connection a shim, shared by the clients of its pods:
// a pod costs the shim no listener and no connection of its own. The
// shim ends once the last pod it served has been shut down, and its death
// costs the pods it served and no other.
//
// Files in the shim's directory (/run/ketch/shims/<shim-id>):
//
//	shim.pid      the shim's PID; locked while the shim lives (PIDFile)
//	shim.sock     the Group API (AddPod) and every pod's Shim API (0600) (SockFile)
//	io.sock       exec and attach sessions (0600) (IOSockFile)
//
// Files in a pod directory (/run/ketch/pods/<pod-id>):
//
//	shim          a link to the directory of the shim serving the pod,
//	              removed when its Shutdown is done (ShimLink)
//	libcontainer/ libcontainer's state of each container (StateDir)
//	exits/<id>    each container's exit record; kept after Shutdown (ExitsDir)
//	counts/<id>   each ketch-init's counts, for ketchd's metrics (CountsDir)
package shim
