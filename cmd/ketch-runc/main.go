// Command ketch-runc is the libcontainer helper the shim runs for each
// container operation (package oci/runc/helper), and runc's init, which
// libcontainer re-executes it as inside every new container.
//
//	ketch-runc create|run|kill|update|destroy --dir <pod dir> --id <id>   (request on stdin, reply on stdout)
//	ketch-runc init   (libcontainer's re-exec of /proc/self/exe inside a new container)
package main

import (
	"os"

	"github.com/opencontainers/runc/libcontainer"
	// nsexec runs as a C constructor of "ketch-runc init", before the Go
	// runtime starts threads, to enter the container's namespaces.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"

	"ketch.dev/ketch/oci/runc/helper"
)

func init() {
	// libcontainer always re-executes /proc/self/exe as "<self> init" to
	// set up a container; it must take over before main parses flags.
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init()
	}
}

func main() {
	os.Exit(helper.Main(os.Args[1:]))
}
