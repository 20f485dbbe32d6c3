// Command ketch-shim is the shim: ketchd starts one per group of pods, in
// its own session, and talks to it over ttrpc. It only parses flags and
// wires the process; package oci/shim/server holds the logic.
//
//	ketch-shim --dir /run/ketch/shims/<shim-id> [--log <file>] [--ready-fd <n>]
//
// It links no libcontainer and no cgo: ketch-runc, beside it, does what
// needs libcontainer, a process a call.
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

	"ketch.dev/ketch/oci/shim/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
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
