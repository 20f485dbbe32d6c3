package image

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
)

// Normalize turns a reference into the full form image records are named by,
// the way containerd and docker do: "busybox" becomes
// "docker.io/library/busybox:latest", and a reference with both a tag and a
// digest keeps only the digest.
func Normalize(ref string) (string, error) {
	if ref == "" {
		return "", fmt.Errorf("image reference is empty: %w", errdefs.ErrInvalidArgument)
	}
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("parse image reference %q: %v: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	return named.String(), nil
}

func isDigested(name string) bool { return strings.Contains(name, "@") }

// idPrefix reports whether ref can be (a prefix of) an image ID and returns it
// in "sha256:<hex>" form. Three hex digits is the shortest prefix accepted, as
// docker's digest set does.
func idPrefix(ref string) (string, bool) {
	hex := strings.TrimPrefix(ref, "sha256:")
	if len(hex) < 3 || len(hex) > 64 {
		return "", false
	}
	for _, c := range hex {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", false
		}
	}
	return "sha256:" + hex, true
}
