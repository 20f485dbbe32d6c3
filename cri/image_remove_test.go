package cri

import (
	"testing"

	"go.uber.org/mock/gomock"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestRemoveImage(t *testing.T) {
	for _, tc := range []struct {
		desc string
		ref  string
	}{
		{"by tag", "docker.io/library/busybox:1.36"},
		{"by ID", "sha256:0123abcd"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			srv, images, _ := newTestServer(t, Config{})
			images.EXPECT().Remove(gomock.Any(), tc.ref).Return(nil)
			resp, err := srv.RemoveImage(t.Context(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: tc.ref}})
			if err != nil || resp == nil {
				t.Errorf("got (%v, %v), want a response and no error", resp, err)
			}
		})
	}
}
