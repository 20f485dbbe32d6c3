package image

import (
	"encoding/base64"
	"testing"

	"github.com/containerd/errdefs"
)

func TestNormalize(t *testing.T) {
	for _, tc := range []struct {
		desc, ref, want string
		invalid         bool
	}{
		{desc: "short name", ref: "busybox", want: "docker.io/library/busybox:latest"},
		{desc: "short name with tag", ref: "busybox:1.36", want: "docker.io/library/busybox:1.36"},
		{desc: "docker hub user repo", ref: "user/app", want: "docker.io/user/app:latest"},
		{desc: "registry with port", ref: "127.0.0.1:5000/a/b:1", want: "127.0.0.1:5000/a/b:1"},
		{desc: "tag and digest keep the digest", ref: "registry.k8s.io/pause:3.9@sha256:" + sixtyFour, want: "registry.k8s.io/pause@sha256:" + sixtyFour},
		{desc: "empty", ref: "", invalid: true},
		{desc: "upper case", ref: "Busybox", invalid: true},
		{desc: "double colon", ref: "busybox::1", invalid: true},
		{desc: "short digest", ref: "busybox@sha256:abc", invalid: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := Normalize(tc.ref)
			if tc.invalid {
				if !errdefs.IsInvalidArgument(err) {
					t.Fatalf("Normalize(%q) = %q, %v; want InvalidArgument", tc.ref, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Normalize(%q) = %q, %v; want %q", tc.ref, got, err, tc.want)
			}
		})
	}
}

const sixtyFour = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestIDPrefix(t *testing.T) {
	for _, tc := range []struct {
		desc, ref, want string
		ok              bool
	}{
		{"full id", "sha256:" + sixtyFour, "sha256:" + sixtyFour, true},
		{"bare hex", sixtyFour[:12], "sha256:" + sixtyFour[:12], true},
		{"too short", "ab", "", false},
		{"not hex", "busybox", "", false},
		{"too long", sixtyFour + "0", "", false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, ok := idPrefix(tc.ref)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("idPrefix(%q) = %q, %v; want %q, %v", tc.ref, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestCredentials(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte("u:p"))
	for _, tc := range []struct {
		desc       string
		auth       *Auth
		host       string
		user, pass string
		invalid    bool
	}{
		{desc: "none", auth: nil, host: "r.io"},
		{desc: "username and password", auth: &Auth{Username: "u", Password: "p"}, host: "r.io", user: "u", pass: "p"},
		{desc: "auth field", auth: &Auth{Auth: b64}, host: "r.io", user: "u", pass: "p"},
		{desc: "identity token", auth: &Auth{IdentityToken: "tok"}, host: "r.io", pass: "tok"},
		{desc: "server address matches", auth: &Auth{Username: "u", Password: "p", ServerAddress: "https://r.io/v2/"}, host: "r.io", user: "u", pass: "p"},
		{desc: "server address differs", auth: &Auth{Username: "u", Password: "p", ServerAddress: "other.io"}, host: "r.io"},
		{desc: "docker hub address", auth: &Auth{Username: "u", Password: "p", ServerAddress: "https://index.docker.io/v1/"}, host: "registry-1.docker.io", user: "u", pass: "p"},
		{desc: "auth not base64", auth: &Auth{Auth: "%%%"}, host: "r.io", invalid: true},
		{desc: "auth without colon", auth: &Auth{Auth: base64.StdEncoding.EncodeToString([]byte("up"))}, host: "r.io", invalid: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			user, pass, err := credentials(tc.auth)(tc.host)
			if tc.invalid != errdefs.IsInvalidArgument(err) || (!tc.invalid && err != nil) {
				t.Fatalf("error = %v, want invalid %v", err, tc.invalid)
			}
			if user != tc.user || pass != tc.pass {
				t.Errorf("credentials = %q, %q; want %q, %q", user, pass, tc.user, tc.pass)
			}
		})
	}
}
