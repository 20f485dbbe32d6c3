package cni

// The test harness: real CNI plugins from /usr/lib/cni on a test-only
// bridge and subnet, in network namespaces the tests create, with every
// trace (netns, veth, bridge, IPAM record, iptables rule, ip_forward)
// removed again, even when a test fails.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"ketch.dev/ketch/sandbox/netns"
)

const (
	testBridge  = "ketchtest0"
	testSubnet  = "10.250.0.0/24"
	testNetwork = "ketchtest"
	systemBin   = "/usr/lib/cni"
	// recorderName is the plugin name under which the test binary acts as
	// a CNI plugin that records what it was given (see TestMain).
	recorderName = "ketchtest-recorder"
	guardComment = "ketch cni test guard"
)

func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == recorderName {
		os.Exit(recorderMain())
	}
	os.Exit(m.Run())
}

// record is what the recorder plugin saw in one call.
type record struct {
	Command       string          `json:"command"`
	Args          string          `json:"args"`
	Netns         string          `json:"netns"`
	IfName        string          `json:"ifName"`
	RuntimeConfig json.RawMessage `json:"runtimeConfig"`
}

// recorderMain is a CNI plugin that appends what it was called with to the
// file its config names and passes the previous result on, so it can sit
// in the middle of a real chain.
func recorderMain() int {
	if os.Getenv("CNI_COMMAND") == "VERSION" {
		fmt.Print(`{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}`)
		return 0
	}
	var conf struct {
		CNIVersion    string          `json:"cniVersion"`
		Record        string          `json:"record"`
		PrevResult    json.RawMessage `json:"prevResult"`
		RuntimeConfig json.RawMessage `json:"runtimeConfig"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&conf); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	line, _ := json.Marshal(record{
		Command:       os.Getenv("CNI_COMMAND"),
		Args:          os.Getenv("CNI_ARGS"),
		Netns:         os.Getenv("CNI_NETNS"),
		IfName:        os.Getenv("CNI_IFNAME"),
		RuntimeConfig: conf.RuntimeConfig,
	})
	f, err := os.OpenFile(conf.Record, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if os.Getenv("CNI_COMMAND") == "ADD" {
		if len(conf.PrevResult) > 0 {
			os.Stdout.Write(conf.PrevResult)
		} else {
			fmt.Printf(`{"cniVersion":%q}`, conf.CNIVersion)
		}
	}
	return 0
}

// env is one test's CNI world: config, cache, IPAM and netns directories of
// its own, and a Manager over them.
type env struct {
	t                                 *testing.T
	confDir, cacheDir, ipamDir, nsDir string
	binDir                            string // test plugins; searched before systemBin
	mgr                               *Manager
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veths, a bridge and iptables rules")
	}
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		if _, err := os.Stat(filepath.Join(systemBin, p)); err != nil {
			t.Skipf("needs Debian's containernetworking-plugins: %v", err)
		}
	}
	for _, tool := range []string{"iptables", "iptables-save", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	root := t.TempDir()
	e := &env{
		t:        t,
		confDir:  filepath.Join(root, "net.d"),
		cacheDir: filepath.Join(root, "cache"),
		ipamDir:  filepath.Join(root, "ipam"),
		nsDir:    filepath.Join(root, "netns"),
		binDir:   filepath.Join(root, "bin"),
	}
	for _, d := range []string{e.confDir, e.binDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(e.binDir, recorderName)); err != nil {
		t.Fatal(err)
	}
	guardHost(t)
	// Registered after guardHost, so it runs before the host checks: the
	// pins go, then the directory's own mount.
	t.Cleanup(func() { _ = unix.Unmount(e.nsDir, unix.MNT_DETACH) })
	e.mgr = NewManager(Config{ConfDir: e.confDir, BinDirs: []string{e.binDir, systemBin}, CacheDir: e.cacheDir})
	return e
}

func (e *env) bridge() map[string]any {
	return map[string]any{
		"type": "bridge", "bridge": testBridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  [][]map[string]any{{{"subnet": testSubnet}}},
			"dataDir": e.ipamDir,
		},
	}
}

var (
	portmapPlugin  = map[string]any{"type": "portmap", "capabilities": map[string]any{"portMappings": true}}
	loopbackPlugin = map[string]any{"type": "loopback"}
)

func (e *env) recorder() (map[string]any, string) {
	file := filepath.Join(e.t.TempDir(), "calls")
	return map[string]any{"type": recorderName, "record": file, "capabilities": map[string]any{"portMappings": true}}, file
}

// script installs a shell plugin and returns its config.
func (e *env) script(name, body string) map[string]any {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.binDir, name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		e.t.Fatal(err)
	}
	return map[string]any{"type": name}
}

func (e *env) writeConf(file string, plugins ...map[string]any) {
	e.t.Helper()
	b, err := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": testNetwork, "plugins": plugins})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.confDir, file), b, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// netns pins a pod netns that is torn down and removed when the test ends.
func (e *env) netns(podID string) string {
	e.t.Helper()
	path, err := netns.Create(e.nsDir, podID)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.mgr.Teardown(ctx, podID, path, Pod{}); err != nil {
			e.t.Errorf("cleanup teardown of %s: %v", podID, err)
		}
		if err := netns.Remove(path); err != nil {
			e.t.Errorf("cleanup: %v", err)
		}
	})
	return path
}

func podID(n int) string { return fmt.Sprintf("%064x", 0xc0ffee00+n) }

// allocated lists the IPs host-local has on record.
func (e *env) allocated() []string {
	e.t.Helper()
	entries, err := os.ReadDir(filepath.Join(e.ipamDir, testNetwork))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	var ips []string
	for _, d := range entries {
		if net.ParseIP(d.Name()) != nil {
			ips = append(ips, d.Name())
		}
	}
	return ips
}

// bridgePorts lists the host links enslaved to the test bridge: one veth
// per attached pod.
func bridgePorts(t *testing.T) []string {
	t.Helper()
	br, err := netlink.LinkByName(testBridge)
	if err != nil {
		return nil
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var ports []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			ports = append(ports, l.Attrs().Name)
		}
	}
	return ports
}

// waitNoPorts waits for the kernel to delete the host ends of veths whose
// pod end died with a netns: the kernel frees a netns asynchronously.
func waitNoPorts(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for len(bridgePorts(t)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if p := bridgePorts(t); len(p) > 0 {
		t.Errorf("veths left on %s: %v", testBridge, p)
	}
}

func (e *env) checkNothingLeft(podID, ip string, chains []string) {
	e.t.Helper()
	if a := e.allocated(); len(a) > 0 {
		e.t.Errorf("IPs still allocated: %v", a)
	}
	waitNoPorts(e.t)
	if lines := podRules(saveRules(e.t), podID, ip, chains); len(lines) > 0 {
		e.t.Errorf("iptables rules of pod left behind:\n%s", strings.Join(lines, "\n"))
	}
	if atts, err := e.mgr.cni.GetCachedAttachments(podID); err != nil || len(atts) > 0 {
		e.t.Errorf("CNI cache still holds the pod: %v, %v", atts, err)
	}
}

// serve answers every connection to l with "pod", from inside the netns.
func serve(t *testing.T, nsPath, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	err := netns.Do(nsPath, func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("pod"))
			c.Close()
		}
	}()
	return l
}

func reach(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(b) != "pod" {
		return fmt.Errorf("read %q from %s, want the pod's answer", b, addr)
	}
	return nil
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// guardHost keeps the tests' changes to the host's network inside the test
// bridge and undoes them afterwards. The bridge plugin turns on
// ip_forward for the whole host (node-facts.md): forwarding between the
// test bridge and any other interface is dropped while the test runs, and
// ip_forward, the bridge and every iptables rule are restored at the end.
func guardHost(t *testing.T) {
	t.Helper()
	if _, err := netlink.LinkByName(testBridge); err == nil {
		t.Logf("deleting %s left by an earlier run", testBridge)
		deleteBridge(t)
	}
	start := saveRules(t)
	forward, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkRulesRestored(t, start) })

	guard := [][]string{
		{"-i", testBridge, "!", "-o", testBridge},
		{"-o", testBridge, "!", "-i", testBridge},
	}
	for _, g := range guard {
		iptables(t, append(append([]string{"-I", "FORWARD"}, g...), "-m", "comment", "--comment", guardComment, "-j", "DROP")...)
	}
	t.Cleanup(func() {
		for _, g := range guard {
			iptables(t, append(append([]string{"-D", "FORWARD"}, g...), "-m", "comment", "--comment", guardComment, "-j", "DROP")...)
		}
		deleteBridge(t)
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", forward, 0o644); err != nil {
			t.Errorf("restore ip_forward: %v", err)
		}
	})
}

func deleteBridge(t *testing.T) {
	if br, err := netlink.LinkByName(testBridge); err == nil {
		if err := netlink.LinkDel(br); err != nil {
			t.Errorf("delete %s: %v", testBridge, err)
		}
	}
}

func iptables(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("iptables", append([]string{"-w"}, args...)...).CombinedOutput(); err != nil {
		t.Errorf("iptables %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

var builtinChains = []string{":INPUT", ":FORWARD", ":OUTPUT", ":PREROUTING", ":POSTROUTING"}

// saveRules returns the host's IPv4 rules as "table line" strings, without
// counters, so two snapshots compare equal when the rules are.
func saveRules(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		t.Fatalf("iptables-save: %v", err)
	}
	var table string
	var lines []string
	for l := range strings.Lines(string(out)) {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || l == "COMMIT" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "*"):
			table = l[1:]
		case strings.HasPrefix(l, ":"):
			// Built-in chains appear once a table is in use; only the
			// chains someone made are rules to compare.
			if chain := strings.Fields(l)[0]; !slices.Contains(builtinChains, chain) {
				lines = append(lines, table+" "+chain)
			}
		default:
			lines = append(lines, table+" "+l)
		}
	}
	return lines
}

// podRules returns the lines that belong to one pod: those naming its ID
// (plugins put it in rule comments) or its IP, and those of the chains
// given, which were found to be the pod's while it was attached.
func podRules(lines []string, podID, ip string, chains []string) []string {
	var out []string
	for _, l := range lines {
		if strings.Contains(l, podID) || ip != "" && (strings.Contains(l, ip+"/") || strings.Contains(l, ip+":") || strings.HasSuffix(l, " "+ip)) ||
			slices.ContainsFunc(chains, func(c string) bool { return slices.Contains(strings.Fields(l), c) || strings.Contains(l, " :"+c) }) {
			out = append(out, l)
		}
	}
	return out
}

// podChains returns the per-pod chains the pod's rules jump to.
func podChains(lines []string, podID, ip string) []string {
	var chains []string
	for _, l := range podRules(lines, podID, ip, nil) {
		f := strings.Fields(l)
		if i := slices.Index(f, "-j"); i >= 0 && i+1 < len(f) && strings.HasPrefix(f[i+1], "CNI-") && !strings.HasPrefix(f[i+1], "CNI-HOSTPORT-") {
			chains = append(chains, f[i+1])
		}
	}
	return chains
}

// portmap's shared chains are made on its first ADD and, by design, never
// removed by DEL: other pods' rules hang off them.
func isPortmapScaffold(line string) bool {
	f := strings.Fields(line)
	switch {
	case len(f) == 2: // "nat :CHAIN"
		return strings.HasPrefix(f[1], ":CNI-HOSTPORT-")
	case f[1] == "-A" && (f[2] == "CNI-HOSTPORT-SETMARK" || f[2] == "CNI-HOSTPORT-MASQ"):
		return true
	case f[1] == "-A" && !strings.HasPrefix(f[2], "CNI-"):
		return slices.Contains(f, "CNI-HOSTPORT-DNAT") || slices.Contains(f, "CNI-HOSTPORT-MASQ")
	}
	return false
}

// checkRulesRestored removes portmap's shared chains when this test made
// them, then requires the rules to be exactly those before the test.
func checkRulesRestored(t *testing.T, start []string) {
	t.Helper()
	var scaffold, added []string
	for _, l := range saveRules(t) {
		switch {
		case slices.Contains(start, l):
		case isPortmapScaffold(l):
			scaffold = append(scaffold, l)
		default:
			added = append(added, l)
		}
	}
	if len(added) == 0 {
		removeScaffold(t, scaffold)
	}
	end := saveRules(t)
	var removed []string
	for _, l := range start {
		if !slices.Contains(end, l) {
			removed = append(removed, l)
		}
	}
	added = slices.DeleteFunc(end, func(l string) bool { return slices.Contains(start, l) })
	if len(added)+len(removed) > 0 {
		t.Errorf("iptables differ from before the test:\nadded:\n%s\nremoved:\n%s",
			strings.Join(added, "\n"), strings.Join(removed, "\n"))
	}
}

func removeScaffold(t *testing.T, lines []string) {
	t.Helper()
	var chains [][2]string
	for _, l := range lines {
		f := splitRule(l)
		if len(f) == 2 {
			chains = append(chains, [2]string{f[0], strings.TrimPrefix(f[1], ":")})
			continue
		}
		iptables(t, append([]string{"-t", f[0], "-D"}, f[2:]...)...)
	}
	for _, c := range chains {
		iptables(t, "-t", c[0], "-X", c[1])
	}
}

// splitRule splits an iptables-save line into arguments, keeping quoted
// comments whole.
func splitRule(line string) []string {
	var args []string
	var cur strings.Builder
	quoted, inArg := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\' && quoted && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			quoted, inArg = !quoted, true
		case c == ' ' && !quoted:
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args
}
