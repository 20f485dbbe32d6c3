package cri

import (
	"testing"

	"go.uber.org/mock/gomock"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/image"
)

func TestPullImage(t *testing.T) {
	for _, tc := range []struct {
		desc     string
		auth     *runtimeapi.AuthConfig
		wantAuth *image.Auth
	}{
		{desc: "anonymous", auth: nil, wantAuth: nil},
		{
			desc: "every auth field passed through",
			auth: &runtimeapi.AuthConfig{
				Username: "u", Password: "p", Auth: "dTpw", IdentityToken: "id-tok",
				ServerAddress: "registry.example.com",
			},
			wantAuth: &image.Auth{
				Username: "u", Password: "p", Auth: "dTpw", IdentityToken: "id-tok",
				ServerAddress: "registry.example.com",
			},
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			srv, images, _ := newTestServer(t, Config{})
			// gomock.Eq compares the *image.Auth by the struct it points to.
			images.EXPECT().Pull(gomock.Any(), "registry.example.com/app:1", tc.wantAuth).
				Return(image.Image{ID: "sha256:0123abcd"}, nil)
			resp, err := srv.PullImage(t.Context(), &runtimeapi.PullImageRequest{
				Image: &runtimeapi.ImageSpec{Image: "registry.example.com/app:1"},
				Auth:  tc.auth,
			})
			if err != nil {
				t.Fatal(err)
			}
			if resp.ImageRef != "sha256:0123abcd" {
				t.Errorf("image_ref = %q, want the image ID sha256:0123abcd", resp.ImageRef)
			}
		})
	}
}
