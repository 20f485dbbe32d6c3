package cri

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"runtime/debug"
	"time"

	"github.com/containerd/errdefs/pkg/errgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/metrics"
	"ketch.dev/ketch/tracing"
)

// UnaryInterceptor is the one place where CRI calls are logged and where the
// sentinel errors of ketch's packages become gRPC codes. A panic in a handler
// becomes an Internal error for that call instead of killing the daemon and
// every call in flight.
func UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	attrs := requestAttrs(req)
	ctx, span := startSpan(ctx, info.FullMethod, attrs)
	defer func() {
		if p := recover(); p != nil {
			slog.Error("panic in CRI call", append(attrs, "method", info.FullMethod, "panic", p, "stack", string(debug.Stack()))...)
			resp, err = nil, status.Errorf(codes.Internal, "%s: internal error: %v", info.FullMethod, p)
		}
		err = toStatus(err)
		observe(info.FullMethod, err, start)
		level := slog.LevelDebug
		if err != nil {
			level = slog.LevelWarn
			attrs = append(attrs, "code", status.Code(err).String(), "err", err)
		}
		slog.Log(ctx, level, "cri call", append(attrs, "method", info.FullMethod, "duration", time.Since(start))...)
		tracing.End(span, err)
	}()
	return handler(ctx, req)
}

// startSpan begins the span of a CRI call, under kubelet's own if its
// request carried one (W3C traceparent in the gRPC metadata).
func startSpan(ctx context.Context, fullMethod string, attrs []any) (context.Context, trace.Span) {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		ctx = otel.GetTextMapPropagator().Extract(ctx, metadataCarrier(md))
	}
	var kv []attribute.KeyValue
	for i := 0; i+1 < len(attrs); i += 2 {
		kv = append(kv, attribute.String(attrs[i].(string), fmt.Sprint(attrs[i+1])))
	}
	return tracing.Start(ctx, path.Base(fullMethod), kv...)
}

// metadataCarrier reads a trace context out of gRPC metadata.
type metadataCarrier metadata.MD

func (m metadataCarrier) Get(key string) string {
	if v := metadata.MD(m).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (m metadataCarrier) Set(key, value string) { metadata.MD(m).Set(key, value) }
func (m metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// StreamInterceptor does for streaming calls what UnaryInterceptor does.
func StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			slog.Error("panic in CRI stream", "method", info.FullMethod, "panic", p, "stack", string(debug.Stack()))
			err = status.Errorf(codes.Internal, "%s: internal error: %v", info.FullMethod, p)
		}
		err = toStatus(err)
		observe(info.FullMethod, err, start)
		level, attrs := slog.LevelDebug, []any{"method", info.FullMethod, "duration", time.Since(start)}
		if err != nil {
			attrs = append(attrs, "code", status.Code(err).String(), "err", err)
			// A client ending a GetContainerEvents stream is no fault.
			if status.Code(err) != codes.Canceled {
				level = slog.LevelWarn
			}
		}
		slog.Log(context.Background(), level, "cri call", attrs...)
	}()
	return handler(srv, ss)
}

// observe counts a call by method and code, and times it.
func observe(fullMethod string, err error, start time.Time) {
	method := path.Base(fullMethod)
	metrics.CRIRequests.WithLabelValues(method, status.Code(err).String()).Inc()
	metrics.Since(metrics.CRIDuration.WithLabelValues(method), start)
}

// toStatus maps the errdefs sentinel (or context error) in err's chain to
// its gRPC code; an error with none becomes Unknown.
func toStatus(err error) (st error) {
	defer func() {
		// errgrpc encodes each error of the chain as a status detail and
		// panics on one whose Unwrap gives nil (a registry's error did,
		// found by the fuzzer): then the code and message alone.
		if recover() != nil {
			st = errgrpc.ToGRPC(codeOnly{err})
		}
	}()
	return errgrpc.ToGRPC(err)
}

// codeOnly is an error that answers errors.Is and errors.As as the error
// it holds does, without exposing its chain.
type codeOnly struct{ error }

func (c codeOnly) Is(target error) bool { return errors.Is(c.error, target) }
func (c codeOnly) As(target any) bool   { return errors.As(c.error, target) }

// requestAttrs pulls the IDs a CRI request names into log attributes.
func requestAttrs(req any) []any {
	var attrs []any
	if r, ok := req.(interface{ GetPodSandboxId() string }); ok && r.GetPodSandboxId() != "" {
		attrs = append(attrs, "pod", r.GetPodSandboxId())
	}
	if r, ok := req.(interface{ GetContainerId() string }); ok && r.GetContainerId() != "" {
		attrs = append(attrs, "container", r.GetContainerId())
	}
	if r, ok := req.(interface{ GetImage() *runtimeapi.ImageSpec }); ok && r.GetImage() != nil {
		attrs = append(attrs, "image", r.GetImage().GetImage())
	}
	return attrs
}
