package sandbox

import "testing"

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
