// Package server is ketch-shim, the process that runs the processes of a
// bounded group of pods: the ttrpc services of oci/shim/api, the stream
// socket of exec and attach sessions, the reaper, CRI logs and exit
// records, in the files package oci/shim names. It lives as long as its
// pods, so it links no libcontainer and no cgo: each create, start, exec,
// KILL, update and destroy runs ketch-runc (package oci/runc), whose
// container processes are reparented to the shim, their subreaper.
package server
