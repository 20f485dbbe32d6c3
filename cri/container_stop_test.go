package cri

import (
	"syscall"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestStopSignals: a config's stop_signal (KEP-4960) wins over the image's,
// and the one a container gets comes back in its status, real-time
// signals included.
func TestStopSignals(t *testing.T) {
	for _, tc := range []struct {
		cfg     runtimeapi.Signal
		image   string
		want    syscall.Signal
		wantCRI runtimeapi.Signal
	}{
		{runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT, "", syscall.SIGTERM, runtimeapi.Signal_SIGNAL_SIGTERM},
		{runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT, "SIGQUIT", syscall.SIGQUIT, runtimeapi.Signal_SIGNAL_SIGQUIT},
		{runtimeapi.Signal_SIGNAL_SIGUSR1, "SIGQUIT", syscall.SIGUSR1, runtimeapi.Signal_SIGNAL_SIGUSR1},
		{runtimeapi.Signal_SIGNAL_SIGRTMIN, "", 34, runtimeapi.Signal_SIGNAL_SIGRTMIN},
		{runtimeapi.Signal_SIGNAL_SIGRTMINPLUS3, "", 37, runtimeapi.Signal_SIGNAL_SIGRTMINPLUS3},
		{runtimeapi.Signal_SIGNAL_SIGRTMAXMINUS2, "", 62, runtimeapi.Signal_SIGNAL_SIGRTMAXMINUS2},
		{runtimeapi.Signal_SIGNAL_SIGRTMAX, "", 64, runtimeapi.Signal_SIGNAL_SIGRTMAX},
		{runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT, "RTMIN+1", 35, runtimeapi.Signal_SIGNAL_SIGRTMINPLUS1},
	} {
		name := stopSignalOf(&runtimeapi.ContainerConfig{StopSignal: tc.cfg}, tc.image)
		sig, err := stopSignal(name)
		if err != nil || sig != tc.want || criSignal(name) != tc.wantCRI {
			t.Errorf("config %v, image %q: %q is %d (%v), status %v; want %d, %v", tc.cfg, tc.image, name, sig, err, criSignal(name), tc.want, tc.wantCRI)
		}
	}
	if _, err := criSignalName(runtimeapi.Signal(999)); err == nil {
		t.Error("an unknown stop signal was taken")
	}
}
