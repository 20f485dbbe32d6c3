package cri

import (
	"bytes"
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"go.uber.org/mock/gomock"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
)

// newTestServer builds a Server over mocks. gomock's controller fails the
// test on any call no row expected and, at cleanup, on any expected call
// that did not happen.
func newTestServer(t testing.TB, cfg Config) (*Server, *MockImageStore, *MockNetwork) {
	t.Helper()
	d := newTestDeps(t, cfg)
	return d.srv, d.images, d.network
}

// testDeps is a Server over mocks of the packages below cri, and a real
// store (cri's own, in a temporary file).
type testDeps struct {
	srv        *Server
	images     *MockImageStore
	network    *MockNetwork
	sandboxes  *MockSandboxes
	containers *MockContainers
	store      *store.Store
	ctrl       *gomock.Controller
	shims      map[string]*MockShim // by pod: see shimOf
}

// shimOf is the mock of pod's shim, which the container calls for the
// pod's containers reach through Containers.Shim(pod) and no other way.
func (d *testDeps) shimOf(pod string) *MockShim {
	if m := d.shims[pod]; m != nil {
		return m
	}
	m := NewMockShim(d.ctrl)
	d.shims[pod] = m
	d.containers.EXPECT().Shim(gomock.Any(), pod).Return(m, nil).AnyTimes()
	return m
}

func newTestDeps(t testing.TB, cfg Config) *testDeps {
	t.Helper()
	ctrl := gomock.NewController(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	d := &testDeps{images: NewMockImageStore(ctrl), network: NewMockNetwork(ctrl), sandboxes: NewMockSandboxes(ctrl),
		containers: NewMockContainers(ctrl), store: st, ctrl: ctrl, shims: map[string]*MockShim{}}
	// A fresh store holds nothing a crash could have left.
	d.sandboxes.EXPECT().Collect(gomock.Any(), gomock.Any()).Return(nil).AnyTimes()
	d.containers.EXPECT().ContainerDirs().Return(nil, nil).AnyTimes()
	d.sandboxes.EXPECT().NotifyShimLost(gomock.Any()).AnyTimes()
	d.srv, err = New(cfg, d.images, d.network, st, d.sandboxes, d.containers)
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last-in first-out: the watchers stop before the
	// store closes and before gomock checks what was called.
	t.Cleanup(func() { st.Close() })
	t.Cleanup(d.srv.Close)
	return d
}

// intercept calls handler h through UnaryInterceptor, as the gRPC server
// does, so the error it returns carries the code kubelet would see.
func intercept[Req, Resp any](t *testing.T, h func(context.Context, Req) (Resp, error), req Req) (Resp, error) {
	t.Helper()
	resp, err := UnaryInterceptor(t.Context(), req, &grpc.UnaryServerInfo{FullMethod: "/test"},
		func(ctx context.Context, r any) (any, error) { return h(ctx, r.(Req)) })
	out, _ := resp.(Resp)
	return out, err
}

func TestEmptyImageReference(t *testing.T) {
	for _, tc := range []struct {
		desc string
		call func(*testing.T, *Server) error
	}{
		{"PullImage without image spec", func(t *testing.T, s *Server) error {
			_, err := intercept(t, s.PullImage, &runtimeapi.PullImageRequest{})
			return err
		}},
		{"PullImage with empty image", func(t *testing.T, s *Server) error {
			_, err := intercept(t, s.PullImage, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{}})
			return err
		}},
		{"ImageStatus without image spec", func(t *testing.T, s *Server) error {
			_, err := intercept(t, s.ImageStatus, &runtimeapi.ImageStatusRequest{})
			return err
		}},
		{"ImageStatus with empty image", func(t *testing.T, s *Server) error {
			_, err := intercept(t, s.ImageStatus, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{}, Verbose: true})
			return err
		}},
		{"RemoveImage without image spec", func(t *testing.T, s *Server) error {
			_, err := intercept(t, s.RemoveImage, &runtimeapi.RemoveImageRequest{})
			return err
		}},
		{"RemoveImage with empty image", func(t *testing.T, s *Server) error {
			_, err := intercept(t, s.RemoveImage, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{}})
			return err
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			srv, _, _ := newTestServer(t, Config{}) // no EXPECT: any store call fails the test
			if err := tc.call(t, srv); status.Code(err) != codes.InvalidArgument {
				t.Errorf("got %v (code %s), want InvalidArgument", err, status.Code(err))
			}
		})
	}
}

// TestStoreErrorsReachCaller checks that every image RPC hands the store's
// error on unchanged, so the interceptor can map its sentinel.
func TestStoreErrorsReachCaller(t *testing.T) {
	spec := &runtimeapi.ImageSpec{Image: "busybox"}
	for _, tc := range []struct {
		desc   string
		expect func(*MockImageStore, error)
		call   func(*testing.T, *Server) error
	}{
		{"PullImage", func(m *MockImageStore, err error) {
			m.EXPECT().Pull(gomock.Any(), "busybox", nil).Return(imageWithUser(""), err)
		}, func(t *testing.T, s *Server) error {
			_, err := intercept(t, s.PullImage, &runtimeapi.PullImageRequest{Image: spec})
			return err
		}},
		{"ImageStatus", func(m *MockImageStore, err error) {
			m.EXPECT().Get(gomock.Any(), "busybox").Return(imageWithUser(""), err)
		}, func(t *testing.T, s *Server) error {
			_, err := intercept(t, s.ImageStatus, &runtimeapi.ImageStatusRequest{Image: spec})
			return err
		}},
		{"ListImages", func(m *MockImageStore, err error) {
			m.EXPECT().List(gomock.Any()).Return(nil, err)
		}, func(t *testing.T, s *Server) error {
			_, err := intercept(t, s.ListImages, &runtimeapi.ListImagesRequest{})
			return err
		}},
		{"ListImages with filter", func(m *MockImageStore, err error) {
			m.EXPECT().Get(gomock.Any(), "busybox").Return(imageWithUser(""), err)
		}, func(t *testing.T, s *Server) error {
			_, err := intercept(t, s.ListImages, &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{Image: spec}})
			return err
		}},
		{"RemoveImage", func(m *MockImageStore, err error) {
			m.EXPECT().Remove(gomock.Any(), "busybox").Return(err)
		}, func(t *testing.T, s *Server) error {
			_, err := intercept(t, s.RemoveImage, &runtimeapi.RemoveImageRequest{Image: spec})
			return err
		}},
		{"ImageFsInfo", func(m *MockImageStore, err error) {
			m.EXPECT().Usage(gomock.Any()).Return(imageUsage, err)
		}, func(t *testing.T, s *Server) error {
			_, err := intercept(t, s.ImageFsInfo, &runtimeapi.ImageFsInfoRequest{})
			return err
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			srv, images, _ := newTestServer(t, Config{})
			tc.expect(images, fmt.Errorf("store broke: %w", errdefs.ErrUnavailable))
			if err := tc.call(t, srv); status.Code(err) != codes.Unavailable {
				t.Errorf("got %v (code %s), want Unavailable", err, status.Code(err))
			}
		})
	}
}

// TestRegisterOverGRPC drives the server through a real gRPC connection with
// the interceptor installed, as ketchd wires it.
func TestRegisterOverGRPC(t *testing.T) {
	srv, images, _ := newTestServer(t, Config{})
	images.EXPECT().Remove(gomock.Any(), "busybox").Return(errdefs.ErrFailedPrecondition)

	conn := dialTestServer(t, srv)
	_, err := runtimeapi.NewImageServiceClient(conn).RemoveImage(t.Context(),
		&runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: "busybox"}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("RemoveImage: got %v, want FailedPrecondition", err)
	}
	// No CRIU on the node: checkpoints are not offered.
	_, err = runtimeapi.NewRuntimeServiceClient(conn).CheckpointContainer(t.Context(), &runtimeapi.CheckpointContainerRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("CheckpointContainer: got %v, want Unimplemented", err)
	}
}

// A pod's stop waits for its creates under way; creates run together; the
// gate of a pod nobody uses is dropped.
func TestPodGates(t *testing.T) {
	var g podGates
	first, second := g.enter("pod", false), g.enter("pod", false) // two creates at once
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		g.enter("pod", true)()
	}()
	other := g.enter("other", true) // another pod is not held up
	other()
	first()
	select {
	case <-stopped:
		t.Fatal("the stop went ahead of a create under way")
	case <-time.After(50 * time.Millisecond):
	}
	second()
	<-stopped
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.gates) != 0 {
		t.Errorf("%d gates left, want none", len(g.gates))
	}
}

// docs/architecture.md says how many CRI RPCs ketch serves and names the
// others: both derived here from the methods Server declares.
func TestServedRPCsAsDocumented(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	declared := map[string]bool{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Recv == nil || len(fn.Recv.List) != 1 {
				continue
			}
			if star, ok := fn.Recv.List[0].Type.(*ast.StarExpr); ok && fmt.Sprint(star.X) == "Server" {
				declared[fn.Name.Name] = true
			}
		}
	}
	var served, unserved []string
	for _, sd := range []grpc.ServiceDesc{runtimeapi.RuntimeService_ServiceDesc, runtimeapi.ImageService_ServiceDesc} {
		var names []string
		for _, m := range sd.Methods {
			names = append(names, m.MethodName)
		}
		for _, s := range sd.Streams {
			names = append(names, s.StreamName)
		}
		for _, n := range names {
			if declared[n] {
				served = append(served, n)
			} else {
				unserved = append(unserved, n)
			}
		}
	}
	doc, err := os.ReadFile("../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	claim := fmt.Sprintf("%d of cri-api v0.37's %d RPCs are served", len(served), len(served)+len(unserved))
	if !bytes.Contains(doc, []byte(claim)) {
		t.Errorf("docs/architecture.md does not say %q", claim)
	}
	for _, n := range unserved {
		if !bytes.Contains(doc, []byte(n)) {
			t.Errorf("docs/architecture.md does not name %s, which is not served", n)
		}
	}
	t.Logf("served %d, not served: %v", len(served), unserved)
}
