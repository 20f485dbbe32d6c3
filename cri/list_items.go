package cri

import (
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
)

// listItems keeps every listed container's ListContainers item encoded,
// with the Rev of the record it was made from. kubelet lists every
// container each second; on a workflow node of 11,000, encoding the items
// (their labels and annotations, maps, most of it) made the handler and
// its encoding take 75–86 ms a list; answering from encoded ones, 13–17 ms.
// The apiserver's watch cache encodes each object once for the same reason.
type listItems struct {
	mu sync.Mutex          // held through a list: kubelet's come one at a time
	m  map[string]listItem // by container ID; guarded by mu
}

type listItem struct {
	rev uint64
	raw []byte
}

// containersField is ListContainersResponse's repeated Container field.
var containersField = (&runtimeapi.ListContainersResponse{}).ProtoReflect().Descriptor().Fields().ByName("containers").Number()

// response is a ListContainersResponse of ctrs, every container when all.
// Its items, already encoded, are its unknown fields: on the wire a
// repeated field is its items one after another, which the client decodes
// into Containers. In this process Containers stays empty.
func (l *listItems) response(ctrs []store.Container, all bool) (*runtimeapi.ListContainersResponse, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// A full list keeps only what it listed: the item of a container
	// removed while a list was encoding it goes there.
	m := l.m
	if all || m == nil {
		m = make(map[string]listItem, len(ctrs))
	}
	size := 0
	for _, c := range ctrs {
		it, ok := l.m[c.ID]
		if !ok || it.rev != c.Rev {
			raw, err := proto.Marshal(containerItem(c))
			if err != nil {
				return nil, err
			}
			it = listItem{rev: c.Rev, raw: raw}
		}
		m[c.ID] = it
		size += protowire.SizeTag(containersField) + protowire.SizeBytes(len(it.raw))
	}
	l.m = m
	buf := make([]byte, 0, size)
	for _, c := range ctrs {
		buf = protowire.AppendTag(buf, containersField, protowire.BytesType)
		buf = protowire.AppendBytes(buf, m[c.ID].raw)
	}
	resp := &runtimeapi.ListContainersResponse{}
	resp.ProtoReflect().SetUnknown(buf)
	return resp, nil
}

// forget drops a removed container's item.
func (l *listItems) forget(id string) {
	l.mu.Lock()
	delete(l.m, id)
	l.mu.Unlock()
}

// containerItem is c as ListContainers and StreamContainers list it.
func containerItem(c store.Container) *runtimeapi.Container {
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
