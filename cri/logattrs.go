package cri

import (
	"context"
	"log/slog"
	"sync"
)

// LogHandler wraps h so that every line naming a pod or a container by ID
// ("pod", "container") also names the pod as kubectl shows it:
// pod_namespace and pod_name, read from the store.
func (s *Server) LogHandler(h slog.Handler) slog.Handler {
	return &namingHandler{Handler: h, names: &podNames{s: s, byPod: map[string][2]string{}, byCtr: map[string]string{}}}
}

type namingHandler struct {
	slog.Handler
	names    *podNames
	pod, ctr string // named by WithAttrs
}

func (h *namingHandler) Handle(ctx context.Context, r slog.Record) error {
	pod, ctr := h.pod, h.ctr
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "pod":
			pod = a.Value.String()
		case "container":
			ctr = a.Value.String()
		}
		return true
	})
	if ns, name, ok := h.names.of(pod, ctr); ok {
		r = r.Clone()
		r.AddAttrs(slog.String("pod_namespace", ns), slog.String("pod_name", name))
	}
	return h.Handler.Handle(ctx, r)
}

func (h *namingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := *h
	n.Handler = h.Handler.WithAttrs(attrs)
	for _, a := range attrs {
		switch a.Key {
		case "pod":
			n.pod = a.Value.String()
		case "container":
			n.ctr = a.Value.String()
		}
	}
	return &n
}

func (h *namingHandler) WithGroup(name string) slog.Handler {
	n := *h
	n.Handler = h.Handler.WithGroup(name)
	return &n
}

// podNames remembers what it read: a pod's name never changes, nor a
// container's pod.
type podNames struct {
	s  *Server
	mu sync.Mutex
	// byPod maps a pod ID to its namespace and name, byCtr a container ID
	// to its pod's ID; both guarded by mu, and emptied when they grow
	// past maxNames (names of removed pods are never read again).
	byPod map[string][2]string
	byCtr map[string]string
}

const maxNames = 4096

func (p *podNames) of(pod, ctr string) (ns, name string, ok bool) {
	if pod == "" && ctr == "" {
		return "", "", false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if pod == "" {
		if pod, ok = p.byCtr[ctr]; !ok {
			c, err := p.s.store.GetContainer(ctr)
			if err != nil {
				return "", "", false
			}
			pod = c.SandboxID
			if len(p.byCtr) >= maxNames {
				clear(p.byCtr)
			}
			p.byCtr[ctr] = pod
		}
	}
	n, ok := p.byPod[pod]
	if !ok {
		sb, err := p.s.store.GetSandbox(pod)
		if err != nil {
			return "", "", false
		}
		n = [2]string{sb.Namespace, sb.Name}
		if len(p.byPod) >= maxNames {
			clear(p.byPod)
		}
		p.byPod[pod] = n
	}
	return n[0], n[1], true
}
