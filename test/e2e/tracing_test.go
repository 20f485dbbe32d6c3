//go:build e2e

package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// collector is an OTLP/gRPC trace collector, as an operator would run one.
type collector struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.Span // guarded by mu
}

func (c *collector) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			c.spans = append(c.spans, ss.Spans...)
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func startCollector(t *testing.T) (*collector, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	g := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(g, c)
	go func() { _ = g.Serve(l) }()
	t.Cleanup(g.Stop)
	return c, l.Addr().String()
}

func attr(s *tracepb.Span, key string) string {
	for _, a := range s.Attributes {
		if a.Key == key {
			return a.Value.GetStringValue()
		}
	}
	return ""
}

// TestTracing: with [tracing] set, each CRI call is a span, named for its
// method, with its CNI, pull and shim calls as children, under kubelet's
// span when the call carried one.
func TestTracing(t *testing.T) {
	col, addr := startCollector(t)
	d := startKetchd(t, daemonOpts{network: true, extra: fmt.Sprintf("[tracing]\nendpoint = %q\ninsecure = true", addr)})
	// A trace kubelet began: its W3C traceparent travels in the metadata.
	parentTrace, parentSpan := "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	ctx := metadata.AppendToOutgoingContext(ctxT(t, time.Minute), "traceparent", "00-"+parentTrace+"-"+parentSpan+"-01")
	if _, err := d.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: busybox}}); err != nil {
		t.Fatal(err)
	}
	pod, podCfg, _ := d.podWithLogs(t, "traced")
	ctr := d.createContainer(t, pod, podCfg, containerConfig("app", "sleep", "3600"))
	d.startContainer(t, ctr)
	d.stopPod(t, pod)
	d.removePod(t, pod)
	d.stop(t) // sends what is buffered

	col.mu.Lock()
	defer col.mu.Unlock()
	byID := map[string]*tracepb.Span{}
	for _, s := range col.spans {
		byID[hex.EncodeToString(s.SpanId)] = s
	}
	// one finds the span named name whose parent is named parent.
	one := func(name, parent string) *tracepb.Span {
		t.Helper()
		for _, s := range col.spans {
			if p := byID[hex.EncodeToString(s.ParentSpanId)]; s.Name == name && (parent == "" || p != nil && p.Name == parent) {
				return s
			}
		}
		var seen []string
		for _, s := range col.spans {
			seen = append(seen, s.Name)
		}
		t.Errorf("no span %s under %q; spans: %v", name, parent, seen)
		return nil
	}
	if s := one("PullImage", ""); s != nil {
		if hex.EncodeToString(s.TraceId) != parentTrace || hex.EncodeToString(s.ParentSpanId) != parentSpan {
			t.Errorf("PullImage in trace %x under %x, want kubelet's %s under %s", s.TraceId, s.ParentSpanId, parentTrace, parentSpan)
		}
		if attr(s, "image") != busybox {
			t.Errorf("PullImage span's image %q", attr(s, "image"))
		}
	}
	one("image.pull", "PullImage")
	one("RunPodSandbox", "")
	if s := one("cni.add", "RunPodSandbox"); s != nil && attr(s, "pod") != pod {
		t.Errorf("cni.add span's pod %q, want %s", attr(s, "pod"), pod)
	}
	one("shim.Shutdown", "RemovePodSandbox")
	one("shim.CreateContainer", "CreateContainer")
	if s := one("StartContainer", ""); s != nil && attr(s, "container") != ctr {
		t.Errorf("StartContainer span's container %q, want %s", attr(s, "container"), ctr)
	}
	one("shim.StartContainer", "StartContainer")
	one("cni.del", "StopPodSandbox")
	for _, s := range col.spans {
		if s.Name == "shim.Wait" {
			t.Errorf("a span for a watcher's shim.Wait, which belongs to no call")
		}
	}
}
