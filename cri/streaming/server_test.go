package streaming

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestStreamingAddress: off loopback, sessions are served over TLS or not
// at all; with a certificate, the URLs handed out are https.
func TestStreamingAddress(t *testing.T) {
	if _, err := Start("0.0.0.0:0", "", "", nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("off loopback without TLS: %v, want InvalidArgument", err)
	}
	cert, key := selfSigned(t)
	s, err := Start("127.0.0.1:0", cert, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.http.ReadHeaderTimeout == 0 || s.http.IdleTimeout == 0 {
		t.Error("no read-header or idle timeout")
	}
	resp, err := s.GetPortForward(portForwardRequest())
	if err != nil || !strings.HasPrefix(resp.Url, "https://") {
		t.Errorf("URL %v, %v; want https", resp.GetUrl(), err)
	}
}

func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ketch"}, NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func portForwardRequest() *runtimeapi.PortForwardRequest {
	return &runtimeapi.PortForwardRequest{PodSandboxId: "p", Port: []int32{80}}
}
