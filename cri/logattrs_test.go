package cri

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
)

// TestLogHandlerNamesPods: a line that names a pod or one of its
// containers by ID also names the pod as kubectl shows it.
func TestLogHandlerNamesPods(t *testing.T) {
	d := newTestDeps(t, Config{})
	pod, ctr := createdContainer(t, d)
	for _, tc := range []struct {
		desc     string
		log      func(*slog.Logger)
		wantName bool
	}{
		{"a pod by ID", func(l *slog.Logger) { l.Info("x", "pod", pod) }, true},
		{"a container by ID", func(l *slog.Logger) { l.Info("x", "container", ctr) }, true},
		{"a pod through With", func(l *slog.Logger) { l.With("pod", pod).Warn("x") }, true},
		{"a pod ketch does not know", func(l *slog.Logger) { l.Info("x", "pod", "f00d") }, false},
		{"no pod", func(l *slog.Logger) { l.Info("x", "image", "busybox") }, false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var buf bytes.Buffer
			tc.log(slog.New(d.srv.LogHandler(slog.NewJSONHandler(&buf, nil))))
			var line map[string]any
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatalf("%q: %v", buf.String(), err)
			}
			got := line["pod_namespace"] == "ns" && line["pod_name"] == "web"
			_, named := line["pod_name"]
			if got != tc.wantName || named != tc.wantName {
				t.Errorf("line %s: named the pod %v, want %v", buf.String(), named, tc.wantName)
			}
		})
	}
}
