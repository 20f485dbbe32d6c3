package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestContribConfigIsTheDefaults: contrib/config.toml documents every
// field with its default; the two must not drift apart.
func TestContribConfigIsTheDefaults(t *testing.T) {
	got, err := loadConfig("../../contrib/config.toml", true)
	if err != nil {
		t.Fatal(err)
	}
	if want := defaultConfig(); !reflect.DeepEqual(got, want) {
		t.Errorf("contrib/config.toml =\n %+v\ndefaults\n %+v", got, want)
	}
}

func TestLoadConfigRejects(t *testing.T) {
	for _, tc := range []struct{ desc, toml, inErr string }{
		{"unknown field", "sockets = \"/x\"", "sockets"},
		{"bad cgroup driver", "cgroup_driver = \"cgroupv3\"", "cgroup_driver"},
		{"no downloads", "[image]\nmax_concurrent_downloads = 0", "max_concurrent_downloads"},
		{"tiny shm", "[sandbox]\nshm_size = 4096", "shm_size"},
		{"no result cap", "[workflow]\nresult_cap = 0", "result_cap"},
		{"absurd result cap", "[workflow]\nresult_cap = 1000000000000", "result_cap"},
		{"result cap over 1 MiB", "[workflow]\nresult_cap = 1048577", "result_cap"},
		{"unknown init mode", "[workflow]\ninit = \"sometimes\"", "workflow.init"},
		{"bad duration", "[workflow]\nkill_grace = \"soon\"", "soon"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.toml")
			if err := os.WriteFile(path, []byte(tc.toml), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := loadConfig(path, true); err == nil || !strings.Contains(err.Error(), tc.inErr) {
				t.Errorf("got %v, want an error naming %q", err, tc.inErr)
			}
		})
	}
	if _, err := loadConfig(filepath.Join(t.TempDir(), "none.toml"), false); err != nil {
		t.Errorf("a missing default config file: %v, want the defaults", err)
	}
}
