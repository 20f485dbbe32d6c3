// Command ketch-init is PID 1 of every pod sandbox and, where asked, of a
// container. It only parses flags; package reaper holds the logic.
//
//	ketch-init                       pause mode: hold the namespaces, reap orphans, exit 0 on TERM/INT
//	ketch-init [--] command [args]   init mode: run command, forward signals, reap, exit with its code
//	ketch-init --version
//
// With --counts-fd N, ketch-init writes its reaper.Counts to descriptor N,
// a file the shim opened for it.
package main

import (
	"flag"
	"fmt"
	"os"

	"ketch.dev/ketch/reaper"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	showVersion := flag.Bool("version", false, "print the version and exit")
	killGrace := flag.Duration("kill-grace", reaper.DefaultKillGrace, "init mode: how long the entrypoint's leftover process group gets between TERM and KILL")
	countsFD := flag.Int("counts-fd", -1, "a descriptor open on a file to keep the counts of orphans reaped and signals forwarded in")
	flag.Parse()
	if *showVersion {
		fmt.Println("ketch-init", version)
		return
	}
	opts := reaper.Options{KillGrace: *killGrace}
	if *countsFD >= 0 {
		opts.Counts = os.NewFile(uintptr(*countsFD), "counts")
	}
	if flag.NArg() == 0 {
		if err := reaper.Pause(opts); err != nil {
			fmt.Fprintln(os.Stderr, "ketch-init:", err)
			os.Exit(1)
		}
		return
	}
	code, err := reaper.Init(flag.Args(), opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ketch-init:", err)
	}
	os.Exit(code)
}
