package cri

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/mock/gomock"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/image"
)

// imageWithUser is an image as the store reports it, running as user.
func imageWithUser(user string) image.Image {
	return image.Image{
		ID:          "sha256:0123abcd",
		RepoTags:    []string{"docker.io/library/app:1"},
		RepoDigests: []string{"docker.io/library/app@sha256:feed"},
		Size:        4096,
		ChainID:     "sha256:c4a1",
		Config: ocispec.Image{Config: ocispec.ImageConfig{
			User:   user,
			Env:    []string{"PATH=/bin"},
			Labels: map[string]string{"org.opencontainers.image.title": "app"},
		}},
	}
}

func statusOf(t *testing.T, srv *Server, verbose bool) *runtimeapi.ImageStatusResponse {
	t.Helper()
	resp, err := srv.ImageStatus(t.Context(), &runtimeapi.ImageStatusRequest{
		Image: &runtimeapi.ImageSpec{Image: "app:1"}, Verbose: verbose,
	})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestImageStatusTranslatesImage(t *testing.T) {
	srv, images, _ := newTestServer(t, Config{})
	want := imageWithUser("")
	images.EXPECT().Get(gomock.Any(), "app:1").Return(want, nil)
	got := statusOf(t, srv, false)
	img := got.GetImage()
	if img.GetId() != want.ID || !slices.Equal(img.GetRepoTags(), want.RepoTags) ||
		!slices.Equal(img.GetRepoDigests(), want.RepoDigests) || img.GetSize() != want.Size {
		t.Errorf("got image %v, want one made from %+v", img, want)
	}
	if img.GetSpec().GetImage() != want.ID || !maps.Equal(img.GetSpec().GetAnnotations(), want.Config.Config.Labels) {
		t.Errorf("got spec %v, want image %s with the config labels", img.GetSpec(), want.ID)
	}
	if got.Info != nil {
		t.Errorf("got info %v on a request that is not verbose", got.Info)
	}
}

func TestImageStatusUser(t *testing.T) {
	for _, tc := range []struct {
		desc     string
		user     string
		wantUID  *runtimeapi.Int64Value
		wantName string
	}{
		{desc: "uid", user: "1002", wantUID: &runtimeapi.Int64Value{Value: 1002}},
		{desc: "uid:gid", user: "1003:1004", wantUID: &runtimeapi.Int64Value{Value: 1003}},
		{desc: "root uid", user: "0", wantUID: &runtimeapi.Int64Value{Value: 0}},
		{desc: "name", user: "www-data", wantName: "www-data"},
		{desc: "name:gid", user: "www-data:1004", wantName: "www-data"},
		{desc: "unset", user: ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			srv, images, _ := newTestServer(t, Config{})
			images.EXPECT().Get(gomock.Any(), "app:1").Return(imageWithUser(tc.user), nil)
			img := statusOf(t, srv, false).GetImage()
			if (img.GetUid() == nil) != (tc.wantUID == nil) || img.GetUid().GetValue() != tc.wantUID.GetValue() {
				t.Errorf("uid = %v, want %v", img.GetUid(), tc.wantUID)
			}
			if img.GetUsername() != tc.wantName {
				t.Errorf("username = %q, want %q", img.GetUsername(), tc.wantName)
			}
		})
	}
}

func TestImageStatusVerbose(t *testing.T) {
	srv, images, _ := newTestServer(t, Config{})
	images.EXPECT().Get(gomock.Any(), "app:1").Return(imageWithUser("1002"), nil)
	resp := statusOf(t, srv, true)
	var info struct {
		ID        string        `json:"id"`
		ChainID   string        `json:"chainID"`
		ImageSpec ocispec.Image `json:"imageSpec"`
	}
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil {
		t.Fatalf("info is not JSON: %v: %q", err, resp.Info["info"])
	}
	if info.ID != "sha256:0123abcd" || info.ChainID != "sha256:c4a1" ||
		info.ImageSpec.Config.User != "1002" || !slices.Equal(info.ImageSpec.Config.Env, []string{"PATH=/bin"}) {
		t.Errorf("info = %+v, want the image's ID, chain ID and config", info)
	}
}

func TestImageStatusNotFound(t *testing.T) {
	srv, images, _ := newTestServer(t, Config{})
	images.EXPECT().Get(gomock.Any(), "app:1").Return(image.Image{}, fmt.Errorf("image app:1: %w", errdefs.ErrNotFound))
	if img := statusOf(t, srv, true); img.Image != nil || img.Info != nil {
		t.Errorf("got %v, want an empty response for a missing image", img)
	}
}

func TestListImages(t *testing.T) {
	a, b := imageWithUser(""), imageWithUser("")
	b.ID = "sha256:beef"
	for _, tc := range []struct {
		desc    string
		filter  *runtimeapi.ImageFilter
		expect  func(*MockImageStore)
		wantIDs []string
	}{
		{
			desc:    "no filter lists all",
			expect:  func(m *MockImageStore) { m.EXPECT().List(gomock.Any()).Return([]image.Image{a, b}, nil) },
			wantIDs: []string{a.ID, b.ID},
		},
		{
			desc:    "filter without image lists all",
			filter:  &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{}},
			expect:  func(m *MockImageStore) { m.EXPECT().List(gomock.Any()).Return([]image.Image{a}, nil) },
			wantIDs: []string{a.ID},
		},
		{
			desc:    "empty store",
			expect:  func(m *MockImageStore) { m.EXPECT().List(gomock.Any()).Return(nil, nil) },
			wantIDs: []string{},
		},
		{
			desc:    "filter names one image",
			filter:  &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: "app:2"}},
			expect:  func(m *MockImageStore) { m.EXPECT().Get(gomock.Any(), "app:2").Return(b, nil) },
			wantIDs: []string{b.ID},
		},
		{
			desc:   "filter names a missing image",
			filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: "gone:1"}},
			expect: func(m *MockImageStore) {
				m.EXPECT().Get(gomock.Any(), "gone:1").Return(image.Image{}, fmt.Errorf("image gone:1: %w", errdefs.ErrNotFound))
			},
			wantIDs: []string{},
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			srv, images, _ := newTestServer(t, Config{})
			tc.expect(images)
			resp, err := srv.ListImages(t.Context(), &runtimeapi.ListImagesRequest{Filter: tc.filter})
			if err != nil {
				t.Fatal(err)
			}
			ids := []string{}
			for _, img := range resp.Images {
				ids = append(ids, img.Id)
			}
			if !slices.Equal(ids, tc.wantIDs) {
				t.Errorf("got images %v, want %v", ids, tc.wantIDs)
			}
		})
	}
}
