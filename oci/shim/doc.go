// Package shim is ketch-shim, the per-pod process that runs a pod's
// processes through libcontainer, and the client ketchd talks to it with.
//
// One shim runs per pod, in its own session, so it outlives ketchd. It is
// the parent of every container init it starts (libcontainer forks from
// the shim's own process) and the subreaper of everything else the pod
// leaves behind, so it alone sees exit codes; it writes each exit to
// <dir>/exits/<id> (temp file, fsync, rename) before it reports it, so a
// ketchd that was down when a process died still learns how it ended.
//
// Files in the pod directory <dir> (/run/ketch/pods/<pod-id>):
//
//	shim.pid      the shim's PID; locked while the shim lives
//	shim.sock     the ttrpc API (0600)
//	libcontainer/ libcontainer's state of each container
//	exits/<id>    each container's exit record; kept after Shutdown
package shim
