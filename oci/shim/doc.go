// Package shim is ketch-shim, the process that runs the processes of a
// bounded group of pods through libcontainer, and the client ketchd talks
// to it with.
//
// A shim runs in its own session, so it outlives ketchd. It is the parent
// of every container init it starts (libcontainer forks from the shim's
// own process) and the subreaper of everything else its pods leave
// behind, so it alone sees exit codes; it writes each exit to
// <pod dir>/exits/<id> (temp file, fsync, rename) before it reports it, so
// a ketchd that was down when a process died still learns how it ended.
// Each pod is served on sockets of its own, so a connection, a call and a
// failure name one pod; the shim ends once the last pod it served has been
// shut down, and its death costs the pods it served and no other.
//
// Files in the shim's directory (/run/ketch/shims/<shim-id>):
//
//	shim.pid      the shim's PID; locked while the shim lives
//	shim.sock     the Group API (0600): AddPod
//
// Files in a pod directory (/run/ketch/pods/<pod-id>):
//
//	shim          a link to the directory of the shim serving the pod
//	shim.sock     the pod's Shim API (0600)
//	io.sock       the pod's exec and attach sessions (0600)
//	libcontainer/ libcontainer's state of each container
//	exits/<id>    each container's exit record; kept after Shutdown
package shim
