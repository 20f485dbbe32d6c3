package cni

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"ketch.dev/ketch/sandbox/netns"
)

var subnet = netip.MustParsePrefix(testSubnet)

func setup(t *testing.T, e *env, id, ns string, pod Pod) netip.Addr {
	t.Helper()
	res, err := e.mgr.Setup(t.Context(), id, ns, pod)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if len(res.IPs) != 1 || !subnet.Contains(res.IPs[0]) {
		t.Fatalf("Setup IPs = %v, want one in %s", res.IPs, subnet)
	}
	return res.IPs[0]
}

func TestSetupTeardownBridge(t *testing.T) {
	e := newEnv(t)
	e.writeConf("10-test.conflist", e.bridge(), portmapPlugin, loopbackPlugin)
	id := podID(1)
	ns := e.netns(id)

	ip := setup(t, e, id, ns, Pod{Namespace: "default", Name: "web", UID: "uid-1"})

	out, err := exec.Command("nsenter", "--net="+ns, "ip", "-o", "addr", "show", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), " "+ip.String()+"/24 ") {
		t.Errorf("eth0 in the pod netns: %v\n%s", err, out)
	}
	if a := e.allocated(); !slices.Equal(a, []string{ip.String()}) {
		t.Errorf("IPAM records %v, want [%s]", a, ip)
	}
	if p := bridgePorts(t); len(p) != 1 {
		t.Errorf("ports on %s = %v, want the pod's veth", testBridge, p)
	}
	// The pod's address is inside a netns of this test: the host reaches
	// it over the test bridge, nothing leaves the machine.
	l := serve(t, ns, net.JoinHostPort(ip.String(), "8080"))
	if err := reach(l.Addr().String()); err != nil {
		t.Errorf("host to pod: %v", err)
	}
	attached := saveRules(t)
	chains := podChains(attached, id, ip.String())
	if len(chains) == 0 {
		t.Errorf("no masquerade chain for the pod in:\n%s", strings.Join(podRules(attached, id, ip.String(), nil), "\n"))
	}

	for i := range 2 { // the second one finds nothing to do
		if err := e.mgr.Teardown(t.Context(), id, ns, Pod{}); err != nil {
			t.Fatalf("Teardown #%d: %v", i+1, err)
		}
	}
	e.checkNothingLeft(id, ip.String(), chains)
	if err := netns.Check(ns); err != nil {
		t.Errorf("Teardown touched the netns, which is the caller's: %v", err)
	}
}

func TestTwoPodsGetTheirOwnIPs(t *testing.T) {
	e := newEnv(t)
	e.writeConf("10-test.conflist", e.bridge(), portmapPlugin, loopbackPlugin)
	id1, id2 := podID(1), podID(2)
	ns1, ns2 := e.netns(id1), e.netns(id2)
	ip1 := setup(t, e, id1, ns1, Pod{Name: "a"})
	ip2 := setup(t, e, id2, ns2, Pod{Name: "b"})
	if ip1 == ip2 {
		t.Fatalf("both pods got %s", ip1)
	}
	l2 := serve(t, ns2, net.JoinHostPort(ip2.String(), "80"))

	if err := e.mgr.Teardown(t.Context(), id1, ns1, Pod{}); err != nil {
		t.Fatal(err)
	}
	if a := e.allocated(); !slices.Equal(a, []string{ip2.String()}) {
		t.Errorf("after one teardown IPAM records %v, want [%s]", a, ip2)
	}
	if err := reach(l2.Addr().String()); err != nil {
		t.Errorf("the other pod lost its network: %v", err)
	}
}

// RunPodSandbox calls arrive concurrently; the plugins' own locks (host-local's
// lock file, the xtables lock) keep allocations apart.
func TestConcurrentPods(t *testing.T) {
	e := newEnv(t)
	e.writeConf("10-test.conflist", e.bridge(), portmapPlugin, loopbackPlugin)
	const n = 8
	ids, nss := make([]string, n), make([]string, n)
	for i := range n {
		ids[i] = podID(i)
		nss[i] = e.netns(ids[i])
	}
	ips := make([]netip.Addr, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var res Result
			res, errs[i] = e.mgr.Setup(t.Context(), ids[i], nss[i], Pod{Name: ids[i]})
			if errs[i] == nil {
				ips[i] = res.IPs[0]
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	if len(slices.Compact(slices.Clone(ips))) != n {
		t.Fatalf("IPs not distinct: %v", ips)
	}
	for i := range n {
		wg.Go(func() { errs[i] = e.mgr.Teardown(t.Context(), ids[i], nss[i], Pod{}) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	e.checkNothingLeft(podID(0), "", nil)
}

func readRecords(t *testing.T, file string) []record {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []record
	s := bufio.NewScanner(f)
	for s.Scan() {
		var r record
		if err := json.Unmarshal(s.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	return recs
}

// Plugins get the pod's identity and port mappings as kubelet's CNI
// support passed them, and DEL gets the same even when the caller no
// longer has them (portmap's DEL removes nothing without its mappings).
func TestPluginArgsAndPortMappings(t *testing.T) {
	e := newEnv(t)
	rec, calls := e.recorder()
	e.writeConf("10-test.conflist", e.bridge(), rec, portmapPlugin, loopbackPlugin)
	id := podID(1)
	ns := e.netns(id)
	hostPort := freePort(t)
	ip := setup(t, e, id, ns, Pod{Namespace: "team-a", Name: "web-0", UID: "0b5c-uid", PortMappings: []PortMapping{
		{Protocol: "TCP", ContainerPort: 8080, HostPort: int32(hostPort), HostIP: "127.0.0.1"},
		{Protocol: "UDP", ContainerPort: 53}, // no host port: not exposed
	}})
	serve(t, ns, net.JoinHostPort(ip.String(), "8080"))

	// The host's own loopback address, DNATed by portmap into the pod.
	if err := reach(net.JoinHostPort("127.0.0.1", strconv.Itoa(hostPort))); err != nil {
		t.Errorf("host port %d to pod port 8080: %v", hostPort, err)
	}
	chains := podChains(saveRules(t), id, ip.String())
	if err := e.mgr.Teardown(t.Context(), id, ns, Pod{}); err != nil {
		t.Fatal(err)
	}
	if err := reach(net.JoinHostPort("127.0.0.1", strconv.Itoa(hostPort))); err == nil {
		t.Errorf("host port %d still reaches the pod after Teardown", hostPort)
	}
	e.checkNothingLeft(id, ip.String(), chains)

	wantArgs := "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=" + id + ";K8S_POD_UID=0b5c-uid"
	var wantPorts any
	if err := json.Unmarshal(fmt.Appendf(nil, `{"portMappings":[{"containerPort":8080,"hostIP":"127.0.0.1","hostPort":%d,"protocol":"tcp"}]}`, hostPort), &wantPorts); err != nil {
		t.Fatal(err)
	}
	recs := readRecords(t, calls)
	if len(recs) != 2 || recs[0].Command != "ADD" || recs[1].Command != "DEL" {
		t.Fatalf("recorder calls = %+v, want ADD then DEL", recs)
	}
	for _, r := range recs {
		var ports any
		if err := json.Unmarshal(r.RuntimeConfig, &ports); err != nil || !reflect.DeepEqual(ports, wantPorts) {
			t.Errorf("%s got runtimeConfig %s, want %v", r.Command, r.RuntimeConfig, wantPorts)
		}
		if r.Args != wantArgs || r.Netns != ns || r.IfName != "eth0" {
			t.Errorf("%s got CNI_ARGS %q CNI_NETNS %s CNI_IFNAME %s\nwant %q %s eth0", r.Command, r.Args, r.Netns, r.IfName, wantArgs, ns)
		}
	}
}

// Teardown undoes the ADD that happened, even when the config it used is
// gone from the directory.
func TestTeardownUsesTheConfigOfTheAdd(t *testing.T) {
	e := newEnv(t)
	e.writeConf("10-test.conflist", e.bridge(), portmapPlugin, loopbackPlugin)
	id := podID(1)
	ns := e.netns(id)
	ip := setup(t, e, id, ns, Pod{})
	chains := podChains(saveRules(t), id, ip.String())
	if err := os.Remove(filepath.Join(e.confDir, "10-test.conflist")); err != nil {
		t.Fatal(err)
	}
	if err := e.mgr.Teardown(t.Context(), id, ns, Pod{}); err != nil {
		t.Fatal(err)
	}
	e.checkNothingLeft(id, ip.String(), chains)
}

func TestTeardownOfPodNeverSetUp(t *testing.T) {
	e := newEnv(t)
	id := podID(1)
	ns := e.netns(id)
	if err := e.mgr.Teardown(t.Context(), id, ns, Pod{}); err != nil {
		t.Errorf("without a config: %v", err)
	}
	e.writeConf("10-test.conflist", e.bridge(), portmapPlugin, loopbackPlugin)
	if err := e.mgr.Teardown(t.Context(), id, ns, Pod{}); err != nil {
		t.Errorf("with a config: %v", err)
	}
}

// A netns can vanish under a pod (removed by hand, or the host rebooted and
// /run went with it). Teardown must still give the IP back, and the
// masquerade rules, which the bridge plugin finds only through the pod's
// interface, must go too.
func TestTeardownAfterNetnsVanished(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		vanish func(path string) error
	}{
		{"netns removed", netns.Remove},
		{"netns unmounted, file left", func(path string) error { return unix.Unmount(path, unix.MNT_DETACH) }},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			e := newEnv(t)
			e.writeConf("10-test.conflist", e.bridge(), portmapPlugin, loopbackPlugin)
			id := podID(1)
			ns := e.netns(id)
			ip := setup(t, e, id, ns, Pod{PortMappings: []PortMapping{{ContainerPort: 80, HostPort: int32(freePort(t)), HostIP: "127.0.0.1"}}})
			chains := podChains(saveRules(t), id, ip.String())
			if err := tc.vanish(ns); err != nil {
				t.Fatal(err)
			}
			if _, err := e.mgr.Setup(t.Context(), podID(2), ns, Pod{}); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("Setup in the vanished netns = %v, want NotFound", err)
			}

			if err := e.mgr.Teardown(t.Context(), id, ns, Pod{}); err != nil {
				t.Fatalf("Teardown: %v", err)
			}
			e.checkNothingLeft(id, ip.String(), chains)
			left, _ := os.ReadDir(e.nsDir)
			for _, d := range left {
				if d.Name() != id {
					t.Errorf("netns dir holds %s", d.Name())
				}
			}
		})
	}
}

// A failed ADD leaves nothing: the plugins that ran before the failing one
// are undone before Setup returns.
func TestSetupFailureLeavesNothing(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		plugin  func(e *env) map[string]any
		wantMsg string
	}{
		{
			desc: "plugin exits 1",
			plugin: func(e *env) map[string]any {
				return e.script("ketchtest-fail", `[ "$CNI_COMMAND" = ADD ] || exit 0
echo "ketchtest-fail: no ADD today" >&2
exit 1
`)
			},
			wantMsg: "no ADD today",
		},
		{
			desc:    "plugin not installed",
			plugin:  func(*env) map[string]any { return map[string]any{"type": "ketchtest-missing"} },
			wantMsg: `failed to find plugin "ketchtest-missing"`,
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			e := newEnv(t)
			e.writeConf("10-test.conflist", e.bridge(), tc.plugin(e), portmapPlugin, loopbackPlugin)
			id := podID(1)
			ns := e.netns(id)
			before := saveRules(t)

			res, err := e.mgr.Setup(t.Context(), id, ns, Pod{})
			if err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("Setup = %v, %v; want an error saying %q", res, err, tc.wantMsg)
			}
			if strings.Contains(err.Error(), "undoing it failed") {
				t.Errorf("undo failed: %v", err)
			}
			e.checkNothingLeft(id, "", nil)
			if added := slices.DeleteFunc(saveRules(t), func(l string) bool { return slices.Contains(before, l) || isPortmapScaffold(l) }); len(added) > 0 {
				t.Errorf("rules added by the failed Setup:\n%s", strings.Join(added, "\n"))
			}
		})
	}
}

// A plugin that hangs is bounded by the caller's deadline, together with
// the children it started (which hold its stdout open), and the undo
// leaves nothing behind.
func TestSetupHangingPluginHonoursDeadline(t *testing.T) {
	e := newEnv(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	hang := e.script("ketchtest-hang", fmt.Sprintf(`[ "$CNI_COMMAND" = ADD ] || exit 0
echo $$ > %s
sleep 60
`, pidFile))
	e.writeConf("10-test.conflist", e.bridge(), hang, portmapPlugin, loopbackPlugin)
	id := podID(1)
	ns := e.netns(id)

	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	start := time.Now()
	_, err := e.mgr.Setup(ctx, id, ns, Pod{})
	took := time.Since(start)
	t.Logf("Setup with a hanging plugin returned after %v: %v", took, err)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Setup = %v, want DeadlineExceeded", err)
	}
	if took > 2500*time.Millisecond {
		t.Errorf("Setup took %v with a 1s deadline", took)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the hanging plugin never ran: %v", err)
	}
	pgid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	// The plugin led its own process group; its sleep was in it. Killed
	// members may linger as zombies until PID 1 reaps them.
	if live := liveMembers(t, pgid); len(live) > 0 {
		t.Errorf("processes of the hung plugin still running: %v", live)
		_ = unix.Kill(-pgid, unix.SIGKILL)
	}
	e.checkNothingLeft(id, "", nil)
}

// liveMembers lists the processes of group pgid that are not zombies.
func liveMembers(t *testing.T, pgid int) []string {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var live []string
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
			live = append(live, string(b[:bytes.LastIndexByte(b, ')')+1]))
		}
	}
	return live
}

func TestSetupRejects(t *testing.T) {
	e := newEnv(t)
	id := podID(1)
	ns := e.netns(id)
	for _, tc := range []struct {
		desc, id, ns string
		conf         bool
		want         error
	}{
		{"no pod ID", "", ns, true, errdefs.ErrInvalidArgument},
		{"no netns", id, "", true, errdefs.ErrInvalidArgument},
		{"netns missing", id, filepath.Join(e.nsDir, "missing"), true, errdefs.ErrNotFound},
		{"no network config", id, ns, false, errdefs.ErrFailedPrecondition},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			os.RemoveAll(filepath.Join(e.confDir, "10-test.conflist"))
			if tc.conf {
				e.writeConf("10-test.conflist", e.bridge(), portmapPlugin, loopbackPlugin)
			}
			if _, err := e.mgr.Setup(t.Context(), tc.id, tc.ns, Pod{}); !errors.Is(err, tc.want) {
				t.Errorf("Setup = %v, want %v", err, tc.want)
			}
			if a := e.allocated(); len(a) > 0 {
				t.Errorf("IPs allocated by a rejected Setup: %v", a)
			}
		})
	}
}

// TestLatency measures what RunPodSandbox and StopPodSandbox/RemovePodSandbox
// will pay for networking, on the same steps node-facts.md timed for
// `ip netns add` and the plugins.
func TestLatency(t *testing.T) {
	e := newEnv(t)
	e.writeConf("10-test.conflist", e.bridge(), portmapPlugin, loopbackPlugin)
	const runs = 20
	var create, add, del, remove []time.Duration
	for i := range runs {
		id := podID(100 + i)
		t0 := time.Now()
		ns, err := netns.Create(e.nsDir, id)
		if err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		_, err = e.mgr.Setup(t.Context(), id, ns, Pod{Namespace: "default", Name: "bench", UID: id})
		t2 := time.Now()
		if err != nil {
			_ = netns.Remove(ns)
			t.Fatal(err)
		}
		err = e.mgr.Teardown(t.Context(), id, ns, Pod{})
		t3 := time.Now()
		if err != nil {
			t.Fatal(err)
		}
		if err := netns.Remove(ns); err != nil {
			t.Fatal(err)
		}
		t4 := time.Now()
		create, add, del, remove = append(create, t1.Sub(t0)), append(add, t2.Sub(t1)), append(del, t3.Sub(t2)), append(remove, t4.Sub(t3))
	}
	for _, m := range []struct {
		name string
		d    []time.Duration
	}{{"netns.Create", create}, {"Setup (ADD)", add}, {"Teardown (DEL)", del}, {"netns.Remove", remove}} {
		slices.Sort(m.d)
		t.Logf("%-15s p50 %v  p90 %v  (%d runs)", m.name, m.d[runs/2].Round(10*time.Microsecond), m.d[runs*9/10].Round(10*time.Microsecond), runs)
	}
	if a := e.allocated(); len(a) > 0 {
		t.Errorf("IPs left: %v", a)
	}
}
