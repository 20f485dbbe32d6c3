package cri

import (
	"testing"
	"time"

	"go.uber.org/mock/gomock"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/image"
)

var imageUsage = image.Usage{Mountpoint: "/var/lib/ketch", Bytes: 123456789, Inodes: 4242}

func TestImageFsInfo(t *testing.T) {
	srv, images, _ := newTestServer(t, Config{})
	images.EXPECT().Usage(gomock.Any()).Return(imageUsage, nil)
	before := time.Now().UnixNano()
	resp, err := srv.ImageFsInfo(t.Context(), &runtimeapi.ImageFsInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	fss := resp.GetImageFilesystems()
	if len(fss) != 1 {
		t.Fatalf("got %d image filesystems, want 1", len(fss))
	}
	fs := fss[0]
	if fs.GetFsId().GetMountpoint() != imageUsage.Mountpoint ||
		fs.GetUsedBytes().GetValue() != imageUsage.Bytes ||
		fs.GetInodesUsed().GetValue() != imageUsage.Inodes {
		t.Errorf("got mountpoint %q bytes %d inodes %d, want %+v",
			fs.GetFsId().GetMountpoint(), fs.GetUsedBytes().GetValue(), fs.GetInodesUsed().GetValue(), imageUsage)
	}
	if cfs := resp.GetContainerFilesystems(); len(cfs) != 1 || cfs[0].GetFsId().GetMountpoint() != imageUsage.Mountpoint {
		t.Errorf("container filesystems %v, want the image store's", cfs)
	}
	if fs.Timestamp < before || fs.Timestamp > time.Now().UnixNano() {
		t.Errorf("timestamp %d is not the time of the call", fs.Timestamp)
	}
}
