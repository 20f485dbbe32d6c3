package reaper

import "golang.org/x/sys/unix"

// Pause is pause mode: it holds the namespaces it was started in by staying
// alive, reaps every orphan that comes to it, and returns nil when SIGTERM or
// SIGINT arrives (the caller exits 0, as a pod sandbox's pause process must).
//
// As PID 1 of a PID namespace it reaps every orphan of that namespace; as
// any other PID it warns once on Options.Stderr and reaps the orphans of its
// own descendants.
func Pause(opts Options) error {
	ev, err := listen(opts, unix.SIGTERM, unix.SIGINT)
	if err != nil {
		return err
	}
	defer ev.stop()
	for {
		// The first pass collects children that exited before listen
		// subscribed to SIGCHLD (ketch-init may inherit them through exec);
		// their SIGCHLD is gone, and no later one may ever come.
		if err := ev.reap(0, nil); err != nil {
			return err
		}
		select {
		case <-ev.children:
		case <-ev.signals:
			return nil
		}
	}
}
