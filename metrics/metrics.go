// Package metrics is ketchd's Prometheus endpoint: what operators scrape
// and alert on. The metrics are package variables, as Prometheus's own
// collectors are, so that the package where a thing happens counts it
// without a handle passed down to it; docs/metrics.md lists them.
package metrics

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// latencyBuckets span a CRI call, from a status answered from memory to a
// pull of a large image.
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

var (
	CRIRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ketch_cri_requests_total", Help: "CRI calls answered, by method and gRPC code.",
	}, []string{"method", "code"})
	CRIDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "ketch_cri_request_duration_seconds", Help: "Time to answer a CRI call, by method.", Buckets: latencyBuckets,
	}, []string{"method"})

	ImagePulls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ketch_image_pulls_total", Help: "Image pulls finished, by result: the gRPC code the pull answered (OK on success).",
	}, []string{"result"})
	ImagePullBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ketch_image_pull_bytes_total", Help: "Bytes of the images pulled: their layers' and configs' compressed size.",
	})
	ImagePullDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "ketch_image_pull_duration_seconds", Help: "Time to pull and unpack an image, successful pulls only.", Buckets: latencyBuckets,
	})
	ImagePullsInProgress = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ketch_image_pulls_in_progress", Help: "PullImage calls under way.",
	})

	CNIDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "ketch_cni_duration_seconds", Help: "Time of a pod's CNI ADD or DEL, by operation.", Buckets: latencyBuckets,
	}, []string{"op"})
	CNIFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ketch_cni_failures_total", Help: "CNI ADDs and DELs that failed, by operation.",
	}, []string{"op"})

	ShimLaunches = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ketch_shim_launches_total", Help: "Shims started; each serves a group of pods.",
	})
	ShimDeaths = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ketch_shim_deaths_total", Help: "Pods whose shim was found dead; each such pod's running containers were recorded exited with reason ShimDied.",
	})
	ContainerExits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ketch_container_exits_total", Help: "Container exits recorded, by reason (Completed, Error, OOMKilled, ShimDied, ...).",
	}, []string{"reason"})

	StreamSessions = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ketch_stream_sessions_open", Help: "Exec, attach and port-forward sessions open, by kind.",
	}, []string{"kind"})

	Results = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ketch_results_total", Help: "Container results captured for workflow engines, by whether the cap cut them.",
	}, []string{"truncated"})

	RecoverySeconds = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ketch_startup_recovery_seconds", Help: "Time ketchd's last start took to clean up after a crash and adopt the pods it found.",
	})
	PodsAdopted = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ketch_startup_pods_adopted", Help: "Ready pods ketchd's last start found running and watches again.",
	})
)

// States counts pods and containers by state; the store answers at each
// scrape, so the gauges never drift from the records.
type States interface {
	CountStates() (pods, containers map[string]int, err error)
}

// Inits reads what the pods' ketch-inits have counted, since ketchd
// started.
type Inits interface {
	InitCounts() (reaped, forwarded uint64, err error)
}

var (
	reapedDesc = prometheus.NewDesc("ketch_init_zombies_reaped_total",
		"Orphaned processes ketch-init reaped, as a pod's PID 1 (pause mode) or a container's (init mode).", nil, nil)
	forwardedDesc = prometheus.NewDesc("ketch_init_signals_forwarded_total",
		"Signals ketch-init in init mode passed on to its container's program and its process group.", nil, nil)
	podsDesc       = prometheus.NewDesc("ketch_pods", "Pod sandboxes, by CRI state.", []string{"state"}, nil)
	containersDesc = prometheus.NewDesc("ketch_containers", "Containers, by CRI state.", []string{"state"}, nil)
)

type stateCollector struct{ s States }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- podsDesc; ch <- containersDesc }

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	pods, ctrs, err := c.s.CountStates()
	if err != nil {
		slog.Warn("metrics: counting pods and containers", "err", err)
		return
	}
	for state, n := range pods {
		ch <- prometheus.MustNewConstMetric(podsDesc, prometheus.GaugeValue, float64(n), state)
	}
	for state, n := range ctrs {
		ch <- prometheus.MustNewConstMetric(containersDesc, prometheus.GaugeValue, float64(n), state)
	}
}

type initCollector struct{ i Inits }

func (c initCollector) Describe(ch chan<- *prometheus.Desc) { ch <- reapedDesc; ch <- forwardedDesc }

func (c initCollector) Collect(ch chan<- prometheus.Metric) {
	reaped, forwarded, err := c.i.InitCounts()
	if err != nil {
		slog.Warn("metrics: reading ketch-init's counts", "err", err)
		return
	}
	ch <- prometheus.MustNewConstMetric(reapedDesc, prometheus.CounterValue, float64(reaped))
	ch <- prometheus.MustNewConstMetric(forwardedDesc, prometheus.CounterValue, float64(forwarded))
}

// Registry holds ketch's metrics with the Go runtime's and the process's.
func Registry(s States, i Inits) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(CRIRequests, CRIDuration, ImagePulls, ImagePullBytes, ImagePullDuration, ImagePullsInProgress,
		CNIDuration, CNIFailures, ShimLaunches, ShimDeaths, ContainerExits, StreamSessions, Results,
		RecoverySeconds, PodsAdopted, stateCollector{s}, initCollector{i},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Serve serves /metrics on addr until ctx ends. It returns once the
// address is bound, with the address (for a ":0" port), or why it cannot.
func Serve(ctx context.Context, addr string, s States, i Inits) (net.Addr, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(Registry(s, i), promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("metrics server", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	return l.Addr(), nil
}

// Since observes the time from start on h: defer metrics.Since(h, time.Now()).
func Since(h prometheus.Observer, start time.Time) { h.Observe(time.Since(start).Seconds()) }
