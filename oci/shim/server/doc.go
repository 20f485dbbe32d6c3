// Package server is ketch-shim, the process that runs the processes of a
// bounded group of pods through libcontainer (cgo: its binary is also
// libcontainer's `init`): the ttrpc services of oci/shim/api, the stream
// socket of exec and attach sessions, the reaper, CRI logs and exit
// records, in the files package oci/shim names. Destroy, for what a dead
// shim left, runs as `ketch-shim destroy`.
package server
