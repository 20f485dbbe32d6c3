//go:build e2e

package e2e

import (
	"bytes"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// proxy is a registry in front of the test registry whose blob responses a
// test can count, slow down or corrupt, and which can demand a bearer token.
// It listens on 127.0.0.1, so ketchd talks plain HTTP to it as to any
// localhost registry.
type proxy struct {
	srv  *httptest.Server
	host string // 127.0.0.1:port

	corrupt   bool          // flip a byte in every layer blob
	delay     time.Duration // before every blob body
	bearer    bool          // demand "Bearer good-token", issued by /token
	redirect  string        // host to redirect blob GETs to, as registries do to a CDN
	mu        sync.Mutex    // guards the counters below
	blobGets  map[string]int
	inFlight  int
	maxFlight int
	auths     []string // every Authorization header received
}

func newProxy(tb testing.TB, configure func(*proxy)) *proxy {
	tb.Helper()
	p := &proxy{blobGets: map[string]int{}}
	if configure != nil {
		configure(p)
	}
	target, _ := url.Parse("http://" + registry)
	rp := httputil.NewSingleHostReverseProxy(target)
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			p.token(w, r)
			return
		}
		if a := r.Header.Get("Authorization"); a != "" {
			p.mu.Lock()
			p.auths = append(p.auths, a)
			p.mu.Unlock()
		}
		if p.redirect != "" && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") &&
			r.Header.Get("Authorization") == "Bearer good-token" {
			http.Redirect(w, r, "http://"+p.redirect+r.URL.Path, http.StatusTemporaryRedirect)
			return
		}
		if p.bearer && r.Header.Get("Authorization") != "Bearer good-token" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+p.host+`/token",service="test-registry"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return
		}
		r.Header.Del("Authorization")
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			p.blob(w, r, rp)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p.srv.Listener = l
	p.srv.Start()
	p.host = l.Addr().String()
	tb.Cleanup(p.srv.Close)
	return p
}

func (p *proxy) blob(w http.ResponseWriter, r *http.Request, rp http.Handler) {
	p.mu.Lock()
	p.blobGets[r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]]++
	p.inFlight++
	p.maxFlight = max(p.maxFlight, p.inFlight)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.inFlight--
		p.mu.Unlock()
	}()
	if p.delay > 0 {
		select {
		case <-time.After(p.delay):
		case <-r.Context().Done():
			return
		}
	}
	rec := httptest.NewRecorder()
	rp.ServeHTTP(rec, r)
	body := rec.Body.Bytes()
	// Layers are the large blobs; configs and manifests stay intact so the
	// pull gets as far as downloading layers.
	if p.corrupt && len(body) > 4096 {
		body = bytes.Clone(body)
		body[len(body)/2] ^= 0xff
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(body)
}

// token is a minimal registry token service: Basic credentials (GET) or a
// refresh token (POST, OAuth2 form) buy the one good token.
func (p *proxy) token(w http.ResponseWriter, r *http.Request) {
	ok := false
	switch r.Method {
	case http.MethodGet:
		h := strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
		raw, _ := base64.StdEncoding.DecodeString(h)
		ok = string(raw) == authUser+":"+authPassword
	case http.MethodPost:
		_ = r.ParseForm()
		ok = r.PostForm.Get("refresh_token") == "good-refresh-token"
	}
	if !ok {
		http.Error(w, `{"errors":[{"code":"DENIED"}]}`, http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"token":"good-token","access_token":"good-token","expires_in":300}`)
}

func (p *proxy) counts() (gets map[string]int, maxInFlight int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	gets = map[string]int{}
	for k, v := range p.blobGets {
		gets[k] = v
	}
	return gets, p.maxFlight
}

// authorizations is every Authorization header the proxy received.
func (p *proxy) authorizations() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.auths)
}
