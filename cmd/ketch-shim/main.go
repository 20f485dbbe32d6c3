// Command ketch-shim is the shim: ketchd starts one per group of pods, in
// its own session, and talks to it over ttrpc. It only parses flags and
// wires the process; package oci/shim/server holds the logic.
//
//	ketch-shim --dir /run/ketch/shims/<shim-id> [--log <file>] [--ready-fd <n>]
//	ketch-shim destroy --dir <pod dir> --id <id>   (ketchd's clean-up of what a dead shim left)
//	ketch-shim init      (libcontainer's re-exec of /proc/self/exe inside a new container)
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/opencontainers/runc/libcontainer"
	// nsexec runs as a C constructor of "ketch-shim init", before the Go
	// runtime starts threads, to enter the container's namespaces.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"

	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/oci/shim/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func init() {
	// libcontainer always re-executes /proc/self/exe as "<self> init" to
	// set up a container; it must take over before main parses flags.
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init()
	}
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "destroy" {
		destroy(os.Args[2:])
		return
	}
	dir := flag.String("dir", "", "the shim's directory (/run/ketch/shims/<shim-id>)")
	logPath := flag.String("log", "", "append the shim's log, and its containers' init output, to this file")
	readyFD := flag.Int("ready-fd", -1, "write a newline to this fd once serving, or why starting failed")
	debug := flag.Bool("debug", false, "log every call")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("ketch-shim", version)
		return
	}
	var ready *os.File
	if *readyFD >= 0 {
		ready = os.NewFile(uintptr(*readyFD), "ready")
	}
	if err := run(*dir, *logPath, *debug, ready); err != nil {
		if ready != nil {
			fmt.Fprint(ready, err)
		}
		fmt.Fprintln(os.Stderr, "ketch-shim:", err)
		os.Exit(1)
	}
}

func run(dir, logPath string, debug bool, ready *os.File) error {
	if dir == "" {
		return fmt.Errorf("--dir is required")
	}
	var out io.Writer = os.Stderr
	if logPath != "" {
		l, err := server.OpenLog(logPath)
		if err != nil {
			return err
		}
		out = l
	}
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level})))
	// A write to a closed stdout or stderr (ketchd's pipe, after ketchd
	// died) must not kill the shim. Notify rather than Ignore: an
	// ignored signal would be inherited by every container process.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE, syscall.SIGHUP)
	return server.Serve(context.Background(), server.Options{Dir: dir, Ready: ready})
}

// destroy is `ketch-shim destroy`: server.Destroy in a process of its own,
// so that ketchd, which runs it, links no libcontainer.
func destroy(args []string) {
	fs := flag.NewFlagSet("destroy", flag.ExitOnError)
	dir := fs.String("dir", "", "the pod's directory")
	id := fs.String("id", "", "the container's ID")
	_ = fs.Parse(args)
	if *dir == "" || !shim.ValidID(*id) {
		fmt.Fprintln(os.Stderr, "ketch-shim destroy: --dir and a valid --id are required")
		os.Exit(2)
	}
	if err := server.Destroy(context.Background(), *dir, *id); err != nil {
		fmt.Fprintln(os.Stderr, "ketch-shim destroy:", err)
		os.Exit(1)
	}
}
