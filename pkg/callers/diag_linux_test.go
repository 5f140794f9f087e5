package callers

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// nlMsg builds one netlink message.
func nlMsg(typ uint16, seq uint32, payload []byte) []byte {
	l := unix.SizeofNlMsghdr + len(payload)
	b := make([]byte, nlAlign(l))
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(l))
	ne.PutUint16(b[4:], typ)
	ne.PutUint32(b[8:], seq)
	copy(b[unix.SizeofNlMsghdr:], payload)
	return b
}

func diagMsg(uid, inode uint32, cgroup *uint64) []byte {
	m := make([]byte, sizeofInetDiagMsg)
	ne := binary.NativeEndian
	m[0] = unix.AF_INET
	m[1] = 1
	ne.PutUint32(m[44:], 0x11223344)
	ne.PutUint32(m[48:], 0x55667788)
	ne.PutUint32(m[64:], uid)
	ne.PutUint32(m[68:], inode)
	// an attribute before the cgroup id, as the kernel sends several
	m = append(m, 5, 0, 8, 0, 1, 0, 0, 0) // INET_DIAG_SHUTDOWN-like, padded
	if cgroup != nil {
		a := make([]byte, 12)
		ne.PutUint16(a[0:], 12)
		ne.PutUint16(a[2:], inetDiagCgroupID)
		ne.PutUint64(a[4:], *cgroup)
		m = append(m, a...)
	}
	return m
}

func TestParseDiag(t *testing.T) {
	cg := uint64(4242)
	errMsg := func(errno unix.Errno) []byte {
		b := make([]byte, 4)
		binary.NativeEndian.PutUint32(b, uint32(-int32(errno)))
		return b
	}
	for _, tc := range []struct {
		name    string
		in      []byte
		want    diagAnswer
		done    bool
		wantErr error
	}{
		{name: "answer", in: nlMsg(unix.SOCK_DIAG_BY_FAMILY, 7, diagMsg(1001, 99, &cg)), done: true,
			want: diagAnswer{family: unix.AF_INET, state: 1, uid: 1001, inode: 99, cookie: 0x5566778811223344, cgroupID: 4242, hasCgrp: true}},
		{name: "stub without cgroup", in: nlMsg(unix.SOCK_DIAG_BY_FAMILY, 7, diagMsg(0, 0, nil)), done: true,
			want: diagAnswer{family: unix.AF_INET, state: 1, cookie: 0x5566778811223344}},
		{name: "not found", in: nlMsg(unix.NLMSG_ERROR, 7, errMsg(unix.ENOENT)), done: true, wantErr: errNotFound},
		{name: "other error", in: nlMsg(unix.NLMSG_ERROR, 7, errMsg(unix.EPERM)), done: true, wantErr: unix.EPERM},
		{name: "stale answer skipped", in: nlMsg(unix.SOCK_DIAG_BY_FAMILY, 6, diagMsg(0, 1, &cg))},
		{name: "stale then ours", in: append(nlMsg(unix.SOCK_DIAG_BY_FAMILY, 6, diagMsg(0, 1, &cg)), nlMsg(unix.NLMSG_ERROR, 7, errMsg(unix.ENOENT))...),
			done: true, wantErr: errNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, done, err := parseDiag(tc.in, 7)
			if done != tc.done || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) || got != tc.want {
				t.Errorf("parseDiag = %+v, %v, %v; want %+v, %v, %v", got, done, err, tc.want, tc.done, tc.wantErr)
			}
		})
	}
}

// FuzzParseDiag: whatever the bytes, parsing neither panics nor claims a
// cgroup it did not read.
func FuzzParseDiag(f *testing.F) {
	cg := uint64(1)
	f.Add(nlMsg(unix.SOCK_DIAG_BY_FAMILY, 7, diagMsg(1, 2, &cg)))
	f.Add(nlMsg(unix.NLMSG_ERROR, 7, []byte{0xfe, 0xff, 0xff, 0xff}))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, _, err := parseDiag(b, 7)
		if err != nil && a.hasCgrp {
			t.Errorf("error %v with an answer %+v", err, a)
		}
	})
}
