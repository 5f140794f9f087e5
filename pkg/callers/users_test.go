package callers

import (
	"os"
	"os/user"
	"path/filepath"
	"testing"
	"time"
)

// The uid cache answers from memory until /etc/passwd or /etc/group changes,
// and notices a change within the recheck interval.
func TestUserDBInvalidation(t *testing.T) {
	dir := t.TempDir()
	passwd, group := filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	for _, f := range []string{passwd, group} {
		if err := os.WriteFile(f, []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Unix(1000, 0)
	name, lookups := "alice", 0
	db := &userDB{
		files:   []string{passwd, group},
		recheck: time.Second,
		now:     func() time.Time { return now },
		lookupUID: func(uid string) (*user.User, error) {
			lookups++
			return &user.User{Uid: uid, Gid: "7", Username: name}, nil
		},
		lookupGID: func(gid string) (*user.Group, error) { return &user.Group{Gid: gid, Name: "staff"}, nil },
	}
	check := func(wantName string, wantLookups int) {
		t.Helper()
		ui := db.lookup(1001)
		if ui.name != wantName || !ui.hasGID || ui.gid != 7 || ui.group != "staff" || lookups != wantLookups {
			t.Fatalf("lookup = %+v after %d lookups; want %s after %d", ui, lookups, wantName, wantLookups)
		}
	}
	check("alice", 1)
	check("alice", 1) // cached
	name = "bob"      // the user was renamed...
	if err := os.WriteFile(passwd, []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	check("alice", 1) // ...but the files are not checked again within a second
	now = now.Add(time.Second)
	check("bob", 2)
	now = now.Add(time.Second)
	check("bob", 2) // unchanged files: still cached
}

func TestUserDBNoEntry(t *testing.T) {
	db := newUserDB()
	db.lookupUID = func(string) (*user.User, error) { return nil, user.UnknownUserIdError(61234) }
	if ui := db.lookup(61234); ui != (userInfo{}) {
		t.Errorf("lookup of a uid without entry = %+v, want nothing", ui)
	}
}

func TestDetectLayout(t *testing.T) {
	dir := t.TempDir()
	if l := detectLayout(dir, filepath.Join(dir, "unified")); l.Mode != "v1" || l.Units() {
		t.Errorf("no cgroup2 anywhere: %+v, want v1 without units", l)
	}
	l := DetectLayout()
	t.Logf("this host: %s", l.Describe())
	if l.Units() && !isCgroup2(l.Root) {
		t.Errorf("%+v: root is not cgroup2", l)
	}
	if isCgroup2(cgroupV2Root) && l.Mode != "v2" {
		t.Errorf("%+v: want v2", l)
	}
	if !isCgroup2(cgroupV2Root) && isCgroup2(cgroupHybridRoot) && l.Mode != "hybrid" {
		t.Errorf("%+v: want hybrid", l)
	}
}
