package cri

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"go.uber.org/mock/gomock"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/image"
)

// errorCodes are the errors ketch's packages return and the code kubelet
// must see for each.
var errorCodes = []struct {
	desc string
	err  error
	want codes.Code
}{
	{"not found", errdefs.ErrNotFound, codes.NotFound},
	{"invalid argument", errdefs.ErrInvalidArgument, codes.InvalidArgument},
	{"unauthenticated", errdefs.ErrUnauthenticated, codes.Unauthenticated},
	{"permission denied", errdefs.ErrPermissionDenied, codes.PermissionDenied},
	{"already exists", errdefs.ErrAlreadyExists, codes.AlreadyExists},
	{"failed precondition", errdefs.ErrFailedPrecondition, codes.FailedPrecondition},
	{"unavailable", errdefs.ErrUnavailable, codes.Unavailable},
	{"data loss", errdefs.ErrDataLoss, codes.DataLoss},
	{"deadline exceeded", context.DeadlineExceeded, codes.DeadlineExceeded},
	{"canceled", context.Canceled, codes.Canceled},
	{"no sentinel", errors.New("disk on fire"), codes.Unknown},
	{"already a status", status.Error(codes.ResourceExhausted, "too many pulls"), codes.ResourceExhausted},
}

func TestUnaryInterceptorMapsErrors(t *testing.T) {
	for _, tc := range errorCodes {
		t.Run(tc.desc, func(t *testing.T) {
			srv, images, _ := newTestServer(t, Config{})
			wrapped := fmt.Errorf("pull x: %w", tc.err)
			images.EXPECT().Pull(gomock.Any(), "x", nil).Return(image.Image{}, wrapped)
			resp, err := intercept(t, srv.PullImage, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "x"}})
			if resp != nil {
				t.Errorf("got response %v with an error", resp)
			}
			if status.Code(err) != tc.want {
				t.Errorf("got %v (code %s), want %s", err, status.Code(err), tc.want)
			}
			// kubelet shows the message in events: the context must survive.
			if msg := status.Convert(err).Message(); !strings.Contains(msg, "pull x") {
				t.Errorf("message %q lost the handler's context %q", msg, wrapped)
			}
		})
	}
}

func TestUnaryInterceptorRecoversPanic(t *testing.T) {
	for _, tc := range []struct {
		desc      string
		newServer func(*testing.T) *Server
		wantInMsg string
	}{
		{"store panics", func(t *testing.T) *Server {
			srv, images, _ := newTestServer(t, Config{})
			images.EXPECT().Usage(gomock.Any()).DoAndReturn(func(context.Context) (image.Usage, error) { panic("boom") })
			return srv
		}, "boom"},
		{"nil dependency", func(*testing.T) *Server { return &Server{} }, "nil pointer dereference"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			srv := tc.newServer(t)
			resp, err := UnaryInterceptor(t.Context(), &runtimeapi.ImageFsInfoRequest{},
				&grpc.UnaryServerInfo{FullMethod: "/runtime.v1.ImageService/ImageFsInfo"},
				func(ctx context.Context, r any) (any, error) {
					return srv.ImageFsInfo(ctx, r.(*runtimeapi.ImageFsInfoRequest))
				})
			if resp != nil || status.Code(err) != codes.Internal {
				t.Fatalf("got (%v, %v), want Internal", resp, err)
			}
			if msg := status.Convert(err).Message(); !strings.Contains(msg, tc.wantInMsg) || !strings.Contains(msg, "ImageFsInfo") {
				t.Errorf("message %q should name the method and %q", msg, tc.wantInMsg)
			}
		})
	}
}

func TestStreamInterceptor(t *testing.T) {
	type row struct {
		desc    string
		handler grpc.StreamHandler
		want    codes.Code
	}
	rows := []row{
		{"success", func(any, grpc.ServerStream) error { return nil }, codes.OK},
		{"panic", func(any, grpc.ServerStream) error { panic("boom") }, codes.Internal},
	}
	for _, tc := range errorCodes {
		err := fmt.Errorf("events: %w", tc.err)
		rows = append(rows, row{tc.desc, func(any, grpc.ServerStream) error { return err }, tc.want})
	}
	for _, tc := range rows {
		t.Run(tc.desc, func(t *testing.T) {
			err := StreamInterceptor(nil, nil, &grpc.StreamServerInfo{FullMethod: "/runtime.v1.RuntimeService/GetContainerEvents"}, tc.handler)
			if status.Code(err) != tc.want {
				t.Errorf("got %v (code %s), want %s", err, status.Code(err), tc.want)
			}
		})
	}
}

// nilCause is an error whose Unwrap gives nil, as some libraries' do.
type nilCause struct{}

func (*nilCause) Error() string { return "broken" }
func (*nilCause) Unwrap() error { return nil }

// An error chain errgrpc cannot encode still becomes its code, not a
// panic that ends ketchd.
func TestToStatusOfUnencodableChain(t *testing.T) {
	err := fmt.Errorf("pull: %w", errors.Join(errdefs.ErrNotFound, fmt.Errorf("resolve: %w", &nilCause{})))
	st := toStatus(err)
	if status.Code(st) != codes.NotFound || !strings.Contains(st.Error(), "resolve: broken") {
		t.Errorf("toStatus = %v, want NotFound with the message", st)
	}
}
