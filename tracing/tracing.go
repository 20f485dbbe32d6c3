// Package tracing sends ketchd's spans to an OpenTelemetry collector over
// OTLP/gRPC, as containerd and CRI-O can: a span for each CRI call, named
// for its method and carrying the pod, container and image it names, with
// child spans for CNI, image pulls and shim calls. Until Setup installs an
// exporter every span is OpenTelemetry's no-op, which costs next to
// nothing, so the packages that make spans need no switch of their own.
package tracing

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Config is [tracing] in config.toml.
type Config struct {
	// Endpoint is the host:port of an OTLP/gRPC collector; "" sends
	// nothing.
	Endpoint string `toml:"endpoint"`
	// Insecure sends in plain text, for a collector on the node itself;
	// otherwise TLS with the host's CAs.
	Insecure bool `toml:"insecure"`
	// SamplingRatio is the share of CRI calls traced, 0 to 1; a call
	// kubelet traced itself is traced whatever it is.
	SamplingRatio float64 `toml:"sampling_ratio"`
}

// Setup installs the exporter cfg names as the process's tracer provider;
// the function it returns sends what is buffered and stops it. The
// exporter connects in the background: a collector that is down loses
// spans, never a CRI call.
func Setup(ctx context.Context, cfg Config, version string) (func(context.Context) error, error) {
	if cfg.Endpoint == "" {
		return func(context.Context) error { return nil }, nil
	}
	if cfg.SamplingRatio < 0 || cfg.SamplingRatio > 1 {
		return nil, fmt.Errorf("tracing: sampling_ratio %v: want 0 to 1", cfg.SamplingRatio)
	}
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.Endpoint)}
	if cfg.Insecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	exp, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SamplingRatio))),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName("ketchd"), semconv.ServiceVersion(version))),
	)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	return tp.Shutdown, nil
}

// Start begins a span named name under the one in ctx, if any.
func Start(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return otel.Tracer("ketch.dev/ketch").Start(ctx, name, trace.WithAttributes(attrs...))
}

// End ends span, marked failed with err if err is not nil.
func End(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
