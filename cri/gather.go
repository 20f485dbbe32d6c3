package cri

import (
	"context"
	"log/slog"
	"sync"

	"ketch.dev/ketch/cri/store"
)

// gatherers bounds how many records one list of stats reads at once: each
// asks a shim, a process of its own, so ketchd mostly waits, and a node
// of many pods would otherwise wait for them one after another.
const gatherers = 8

// gather calls get for each item, gatherers at a time, and returns what
// they answered in the items' order. An item whose get fails is left out
// (it stopped meanwhile: logged at debug with the attributes of about),
// unless ctx has ended, which ends the gather with ctx's error.
func gather[T, R any](ctx context.Context, items []T, about func(T) []any, get func(context.Context, T) (R, error)) ([]R, error) {
	type answer struct {
		r  R
		ok bool
	}
	answers := make([]answer, len(items))
	slots := make(chan struct{}, gatherers)
	var wg sync.WaitGroup
	for i, it := range items {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			r, err := get(ctx, it)
			if err != nil {
				slog.Debug("no stats", append(about(it), "err", err)...)
				return
			}
			answers[i] = answer{r, true}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]R, 0, len(items))
	for _, a := range answers {
		if a.ok {
			out = append(out, a.r)
		}
	}
	return out, nil
}

func podAttrs(sb store.Sandbox) []any { return []any{"pod", sb.ID} }
