//go:build e2e

package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheck: `ketchd check` on this node passes, one line per check, and
// warns about what the node lacks; a configuration naming a CNI plugin
// that is not installed fails it.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	check := func(cfg string) (string, int) {
		path := filepath.Join(dir, "config.toml")
		if err := os.WriteFile(path, []byte(`socket = "`+dir+`/ketch.sock"
root = "`+dir+`/root"
state = "`+dir+`/state"
`+cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(ketchdBin, "--config", path, "check").CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return string(out), exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	out, code := check("")
	if code != 0 {
		t.Fatalf("ketchd check exited %d on this node:\n%s", code, out)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		verdict, rest, _ := strings.Cut(l, " ")
		for _, name := range []string{"cgroup version", "cgroup controllers", "systemd", "CAP_SYS_RESOURCE", "user namespaces",
			"overlayfs", "seccomp", "AppArmor / SELinux", "CNI", "registry config", "socket", "disk (root)", "disk (state)"} {
			if strings.HasPrefix(strings.TrimSpace(rest), name+" ") {
				lines[name] = verdict
			}
		}
	}
	if len(lines) != 13 {
		t.Errorf("%d known checks in the output, want 13:\n%s", len(lines), out)
	}
	// What the node lacks, found the way an operator would look.
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	v1 := err != nil
	_, err = os.Stat("/run/systemd/system")
	noSystemd := err != nil
	aa, _ := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	for name, lacks := range map[string]bool{
		"cgroup version": v1, "systemd": noSystemd, "AppArmor / SELinux": strings.TrimSpace(string(aa)) != "Y",
	} {
		if want := map[bool]string{true: "warn", false: "ok"}[lacks]; lines[name] != want {
			t.Errorf("%s: %s, want %s on this node:\n%s", name, lines[name], want, out)
		}
	}

	plugins := filepath.Join(dir, "net.d")
	if err := os.MkdirAll(plugins, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(plugins, "10-x.conflist"), []byte(`{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"no-such-plugin"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code = check("[network]\ncni_conf_dir = \"" + plugins + "\"\n")
	if code != 1 || !strings.Contains(out, "no-such-plugin") {
		t.Errorf("a missing CNI plugin: exit %d, want 1 naming it:\n%s", code, out)
	}
}
