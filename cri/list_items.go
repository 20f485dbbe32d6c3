package cri

import (
	"maps"
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
)

// listItems keeps every listed container's ListContainers item encoded,
// with the Rev of the record it was made from. kubelet lists every
// container each second; on a workflow node of 11,000, encoding the items
// (their labels and annotations, maps, most of it) made the handler and
// its encoding take 75–86 ms a list; answering from encoded ones, ~6 ms.
// The apiserver's watch cache encodes each object once for the same reason.
type listItems struct {
	mu  sync.Mutex          // held through a list: kubelet's come one at a time
	m   map[string]listItem // by container ID; guarded by mu
	gen uint64              // full lists made; guarded by mu
	// full is the last full list's response while m has not changed
	// since: kubelet lists every container each second, and on a
	// workflow node most seconds nothing changed. Never written once
	// made, for gRPC may still be sending it. Guarded by mu.
	full []byte
}

type listItem struct {
	rev uint64 // of the record it was made from
	gen uint64 // the last full list it was in
	raw []byte // the item as ListContainersResponse encodes it: tag, length, Container
}

// containersField is ListContainersResponse's repeated Container field.
var containersField = (&runtimeapi.ListContainersResponse{}).ProtoReflect().Descriptor().Fields().ByName("containers").Number()

// response is a ListContainersResponse of ctrs, every container when all.
// Its items, already encoded, are its unknown fields: on the wire a
// repeated field is its items one after another, which the client decodes
// into Containers. In this process Containers stays empty. Nothing but the
// response is allocated for items that did not change: a list of 11,000
// that copied the records and made a new map of items allocated 16 MB,
// and the garbage collector made its time vary from 8 to 61 ms.
func (l *listItems) response(ctrs []*store.Container, all bool) (*runtimeapi.ListContainersResponse, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = make(map[string]listItem, len(ctrs))
	}
	if all {
		l.gen++
	}
	size := 0
	for _, c := range ctrs {
		it, ok := l.m[c.ID]
		if !ok || it.rev != c.Rev {
			raw, err := encodeItem(c)
			if err != nil {
				return nil, err
			}
			it = listItem{rev: c.Rev, raw: raw}
			l.full = nil
		}
		if all {
			it.gen = l.gen
		}
		l.m[c.ID] = it
		size += len(it.raw)
	}
	if all {
		// A full list keeps only what it listed: the item of a container
		// removed while a list was encoding it goes here.
		maps.DeleteFunc(l.m, func(_ string, it listItem) bool {
			if it.gen != l.gen {
				l.full = nil
				return true
			}
			return false
		})
	}
	buf := l.full
	if !all || buf == nil {
		buf = make([]byte, 0, size)
		for _, c := range ctrs {
			buf = append(buf, l.m[c.ID].raw...)
		}
	}
	if all {
		l.full = buf
	}
	resp := &runtimeapi.ListContainersResponse{}
	resp.ProtoReflect().SetUnknown(buf)
	return resp, nil
}

// encodeItem is c as an item of ListContainersResponse's containers.
func encodeItem(c *store.Container) ([]byte, error) {
	item := containerItem(c)
	n := proto.Size(item)
	raw := protowire.AppendTag(make([]byte, 0, n+protowire.SizeTag(containersField)+protowire.SizeVarint(uint64(n))), containersField, protowire.BytesType)
	raw = protowire.AppendVarint(raw, uint64(n))
	return proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(raw, item)
}

// forget drops a removed container's item.
func (l *listItems) forget(id string) {
	l.mu.Lock()
	if _, ok := l.m[id]; ok {
		delete(l.m, id)
		l.full = nil
	}
	l.mu.Unlock()
}

// codec encodes as gRPC's proto codec does, but for ListContainers'
// responses, which are their unknown fields, the items encoded before:
// those bytes are sent as they are, not copied into a buffer first.
type codec struct{ encoding.CodecV2 }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*runtimeapi.ListContainersResponse); ok && len(r.Containers) == 0 {
		return mem.BufferSlice{mem.SliceBuffer(r.ProtoReflect().GetUnknown())}, nil
	}
	return c.CodecV2.Marshal(v)
}

// containerItem is c as ListContainers and StreamContainers list it.
func containerItem(c *store.Container) *runtimeapi.Container {
	return &runtimeapi.Container{
		Id:           c.ID,
		PodSandboxId: c.SandboxID,
		Metadata:     &runtimeapi.ContainerMetadata{Name: c.Name, Attempt: c.Attempt},
		Image:        &runtimeapi.ImageSpec{Image: c.Image},
		ImageRef:     c.ImageRef,
		ImageId:      c.ImageID,
		State:        criContainerState(c.State),
		CreatedAt:    c.CreatedAt.UnixNano(),
		Labels:       c.Labels,
		Annotations:  c.Annotations,
	}
}
