package sandbox

import (
	"slices"
	"testing"
)

func TestOwnCgroup(t *testing.T) {
	const uid = "7c1f3a2e-0b5d-4e8f-9a61-2d3c4b5a6f70"
	for _, tc := range []struct {
		parent, uid string
		want        bool
	}{
		{"/kubepods/burstable/pod" + uid, uid, true},
		{"/kubepods/pod" + uid, uid, true},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod7c1f3a2e_0b5d_4e8f_9a61_2d3c4b5a6f70.slice", uid, true},
		{"kubepods-burstable-pod7c1f3a2e_0b5d_4e8f_9a61_2d3c4b5a6f70.slice", uid, true},
		{"/kubepods/burstable/podother", uid, false},
		{"/ketch-e2e", uid, false}, // shared by the pods of a test run
		{"", uid, false},
		{"/kubepods/pod", "", false},
	} {
		if got := ownCgroup(Spec{CgroupParent: tc.parent, UID: tc.uid}); got != tc.want {
			t.Errorf("ownCgroup(%q, %q) = %v, want %v", tc.parent, tc.uid, got, tc.want)
		}
	}
}

func TestParseNetDev(t *testing.T) {
	const header = "Inter-|   Receive                                                |  Transmit\n" +
		" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
	for _, tc := range []struct {
		desc, text string
		want       []Interface
		err        bool
	}{
		{desc: "eth0 with lo left out", text: header +
			"    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n" +
			"  eth0:    5000      40    1    2    0     0          0         3     7000      50    4    5    0     0       0          0\n",
			want: []Interface{{Name: "eth0", RxBytes: 5000, RxPackets: 40, RxErrors: 1, RxDropped: 2, TxBytes: 7000, TxPackets: 50, TxErrors: 4, TxDropped: 5}}},
		{desc: "only lo", text: header + "    lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n"},
		{desc: "a counter missing", text: header + "  eth0: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0\n", err: true},
		{desc: "not a number", text: header + "  eth0: x 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n", err: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := parseNetDev([]byte(tc.text))
			if (err != nil) != tc.err || !slices.Equal(got, tc.want) {
				t.Errorf("parseNetDev = %+v, %v; want %+v (error %v)", got, err, tc.want, tc.err)
			}
		})
	}
}
