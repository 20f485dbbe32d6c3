// Command grpchealth serves the gRPC health protocol (grpc.health.v1) on
// :9090 inside the kubelet suite's test image, for kubelet's gRPC probes.
// The service is SERVING until /tmp/unhealthy exists, so a test can make the
// probe fail from inside the container.
package main

import (
	"log"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	l, err := net.Listen("tcp", ":9090")
	if err != nil {
		log.Fatal(err)
	}
	h := health.NewServer()
	go func() {
		for range time.Tick(200 * time.Millisecond) {
			st := healthpb.HealthCheckResponse_SERVING
			if _, err := os.Stat("/tmp/unhealthy"); err == nil {
				st = healthpb.HealthCheckResponse_NOT_SERVING
			}
			h.SetServingStatus("", st)
		}
	}()
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, h)
	log.Printf("serving grpc.health.v1 on %s", l.Addr())
	log.Fatal(s.Serve(l))
}
