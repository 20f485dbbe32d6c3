package shim_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"ketch.dev/ketch/oci/shim"
)

func TestReadCounts(t *testing.T) {
	// As ketch-init writes them.
	line := func(r, f int) string { return fmt.Sprintf("reaped %20d forwarded %20d\n", r, f) }
	for _, tc := range []struct {
		desc  string
		files map[string]string // under counts/; nil: no counts directory
		want  shim.InitCounts
	}{
		{desc: "no counts directory"},
		{desc: "one ketch-init", files: map[string]string{"pod": line(3, 0)}, want: shim.InitCounts{Reaped: 3}},
		{desc: "summed over the pod's ketch-inits", files: map[string]string{"pod": line(3, 0), "ctr": line(1, 2)}, want: shim.InitCounts{Reaped: 4, Forwarded: 2}},
		{desc: "a ketch-init that counted nothing yet", files: map[string]string{"pod": "", "ctr": line(0, 5)}, want: shim.InitCounts{Forwarded: 5}},
		{desc: "a file scribbled on is skipped", files: map[string]string{"pod": "reaped lots", "ctr": line(2, 1)}, want: shim.InitCounts{Reaped: 2, Forwarded: 1}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			dir := t.TempDir()
			if tc.files != nil {
				if err := os.Mkdir(filepath.Join(dir, shim.CountsDir), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			for name, text := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, shim.CountsDir, name), []byte(text), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := shim.ReadCounts(dir)
			if err != nil || got != tc.want {
				t.Errorf("ReadCounts = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
