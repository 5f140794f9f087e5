package callers

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestUnitOf(t *testing.T) {
	for _, tc := range []struct {
		path   string
		unit   string
		slices []string
	}{
		{"/", "", nil},
		{"/system.slice/backup.service", "backup.service", []string{"system.slice"}},
		{"/system.slice/system-foo.slice/foo@1.service", "foo@1.service", []string{"system.slice", "system-foo.slice"}},
		// A unit's own sub-cgroups (Delegate=yes) still belong to it.
		{"/system.slice/docker.service/sub", "docker.service", []string{"system.slice"}},
		{"/user.slice/user-1000.slice/session-3.scope", "session-3.scope", []string{"user.slice", "user-1000.slice"}},
		// A user's own units are the user manager's business: the caller is
		// in user@1000.service, whatever the user named them.
		{"/user.slice/user-1000.slice/user@1000.service/app.slice/backup.service", "user@1000.service", []string{"user.slice", "user-1000.slice"}},
		{"/machine.slice/libpod-abc.scope/container", "libpod-abc.scope", []string{"machine.slice"}},
		// Not systemd's: no unit, whatever lies below.
		{"/docker/abc", "", nil},
		{"/imds-test/backup.service", "", nil},
		{"/system.slice/foo/backup.service", "", []string{"system.slice"}},
		// systemd's cg_escape: a leading "_".
		{"/system.slice/_cpu.service", "cpu.service", []string{"system.slice"}},
		{"/.service", "", nil},
	} {
		unit, sl := UnitOf(tc.path)
		if unit != tc.unit || !slices.Equal(sl, tc.slices) {
			t.Errorf("UnitOf(%q) = %q, %q; want %q, %q", tc.path, unit, sl, tc.unit, tc.slices)
		}
	}
}

func TestValidateUnit(t *testing.T) {
	for _, ok := range []string{"backup.service", "foo@.service", "foo@bar.service", "system-foo.slice", "session-1.scope", `a\x2db.service`, "a:b.service"} {
		if err := ValidateUnit(ok); err != nil {
			t.Errorf("ValidateUnit(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "backup", "backup.timer", ".service", "a b.service", "@.service", "foo@.slice", "ü.service", strings.Repeat("a", 250) + ".service"} {
		if err := ValidateUnit(bad); err == nil {
			t.Errorf("ValidateUnit(%q) = nil, want an error", bad)
		}
	}
}

// Callers as Identify builds them.
var (
	rootShell = Caller{Kind: Host, UID: 0, User: "root", GID: 0, HasGID: true, Group: "root",
		Cgroup: "/user.slice/user-0.slice/session-1.scope", Unit: "session-1.scope", Slices: []string{"user.slice", "user-0.slice"}}
	backupSvc = Caller{Kind: Host, UID: 0, User: "root", GID: 0, HasGID: true, Group: "root",
		Cgroup: "/system.slice/backup.service", Unit: "backup.service", Slices: []string{"system.slice"}}
	fooInst = Caller{Kind: Host, UID: 0, User: "root", HasGID: true, Group: "root",
		Cgroup: "/system.slice/system-foo.slice/foo@7.service", Unit: "foo@7.service", Slices: []string{"system.slice", "system-foo.slice"}}
	www = Caller{Kind: Host, UID: 33, User: "www-data", GID: 33, HasGID: true, Group: "www-data",
		Cgroup: "/system.slice/nginx.service", Unit: "nginx.service", Slices: []string{"system.slice"}}
	alice = Caller{Kind: Host, UID: 1001, User: "alice", GID: 2000, HasGID: true, Group: "web",
		Cgroup: "/user.slice/user-1001.slice/user@1001.service/app.slice/backup.service", Unit: "user@1001.service", Slices: []string{"user.slice", "user-1001.slice"}}
	bob = Caller{Kind: Host, UID: 1002, User: "bob", GID: 1002, HasGID: true, Group: "bob",
		Cgroup: "/user.slice/user-1002.slice/session-4.scope", Unit: "session-4.scope", Slices: []string{"user.slice", "user-1002.slice"}}
	// A DynamicUser= service: its uid has no passwd entry.
	dynamic = Caller{Kind: Host, UID: 61234, Cgroup: "/system.slice/dyn.service", Unit: "dyn.service", Slices: []string{"system.slice"}}
	// A uid without a passwd entry, outside any unit.
	nameless  = Caller{Kind: Host, UID: 4242, Cgroup: "/imds-test"}
	container = Caller{Kind: Source, Source: netip.MustParseAddrPort("172.17.0.5:41000")}
	mappedCtr = Caller{Kind: Source, Source: netip.MustParseAddrPort("[::ffff:172.17.0.6]:41000")}
	otherCtr  = Caller{Kind: Source, Source: netip.MustParseAddrPort("10.88.0.2:41000")}
	closed    = Caller{Kind: Unidentified, Reason: "caller's socket closed", Source: netip.MustParseAddrPort("169.254.169.254:41000")}
)

func TestPolicyMatch(t *testing.T) {
	entries := []Entry{
		{Role: "backup", Units: []string{"backup.service"}},
		{Role: "foo", Units: []string{"foo@.service"}},
		{Role: "web", Users: []string{"www-data", "1001"}, Groups: []string{"web"}},
		{Role: "dyn", Users: []string{"61234"}},
		// A uid without a passwd entry has no primary group; it must not
		// look like gid 0.
		{Role: "rootgroup", Groups: []string{"0"}},
		{Role: "ci", Sources: []netip.Prefix{netip.MustParsePrefix("172.17.0.0/16")}},
		{Role: "users", Units: []string{"user.slice"}},
		// Host callers never match sources, even all of them.
		{Role: "everything", Sources: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}},
	}
	for _, tc := range []struct {
		name   string
		def    Default
		caller Caller
		want   Match
	}{
		{name: "unit", caller: backupSvc, want: Match{OK: true, Role: "backup", Entry: 0}},
		{name: "template instance", caller: fooInst, want: Match{OK: true, Role: "foo", Entry: 1}},
		{name: "user name", caller: www, want: Match{OK: true, Role: "web", Entry: 2}},
		// alice: uid 1001 matches web before her user.slice; her own
		// "backup.service" user unit does not make her backup.
		{name: "numeric uid before slice", caller: alice, want: Match{OK: true, Role: "web", Entry: 2}},
		{name: "dynamic user by uid", caller: dynamic, want: Match{OK: true, Role: "dyn", Entry: 3}},
		{name: "gid needs a passwd entry", caller: nameless, want: Match{Entry: -1}},
		{name: "slice", caller: bob, want: Match{OK: true, Role: "users", Entry: 6}},
		{name: "root shell by group", caller: rootShell, want: Match{OK: true, Role: "rootgroup", Entry: 4}},
		{name: "container", caller: container, want: Match{OK: true, Role: "ci", Entry: 5}},
		{name: "mapped container", caller: mappedCtr, want: Match{OK: true, Role: "ci", Entry: 5}},
		{name: "other container", caller: otherCtr, want: Match{OK: true, Role: "everything", Entry: 7}},
		{name: "unidentified no default", caller: closed, want: Match{Entry: -1}},
		{name: "unidentified default not set", def: Default{Role: "host"}, caller: closed, want: Match{Entry: -1}},
		{name: "unidentified default", def: Default{Role: "host", Unidentified: true}, caller: closed, want: Match{OK: true, Role: "host", Entry: -1}},
		{name: "unidentified: default without a default", def: Default{Unidentified: true}, caller: closed, want: Match{Entry: -1}},
		{name: "unmatched gets default", def: Default{Role: "host"}, caller: nameless, want: Match{OK: true, Role: "host", Entry: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPolicy(entries, tc.def)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Match(tc.caller); got != tc.want {
				t.Errorf("Match(%v) = %+v, want %+v", tc.caller, got, tc.want)
			}
		})
	}
}

// A container never gets a host entry, and only gets the default role when
// there is one.
func TestPolicyContainerNeverHost(t *testing.T) {
	p, err := NewPolicy([]Entry{
		{Role: "root", Users: []string{"0", "root"}, Groups: []string{"0", "root"}},
		{Role: "all-units", Units: []string{"system.slice", "user.slice", "-.slice"}},
	}, Default{})
	if err != nil {
		t.Fatal(err)
	}
	// A Source caller with zero host fields looks like uid 0 to a careless
	// matcher.
	if m := p.Match(container); m.OK {
		t.Errorf("container got %+v", m)
	}
}

func TestNewPolicyErrors(t *testing.T) {
	_, err := NewPolicy([]Entry{
		{Role: "a"},
		{Role: "b", Units: []string{"backup", "ok.service"}, Users: []string{"", "a:b", "1001"}, Groups: []string{"x y", "web"}},
		{Role: "c", Sources: []netip.Prefix{{}}},
		{Role: "d", Users: []string{"4294967295"}},
	}, Default{})
	var paths []string
	for _, e := range joined(err) {
		var pe *PolicyError
		if !errors.As(e, &pe) {
			t.Fatalf("error %v is not a *PolicyError", e)
		}
		paths = append(paths, pe.Path)
	}
	want := []string{"roles[0]", "roles[1].units[0]", "roles[1].users[0]", "roles[1].users[1]", "roles[1].groups[0]", "roles[2].sources[0]", "roles[3].users[0]"}
	if diff := cmp.Diff(want, paths); diff != "" {
		t.Errorf("error paths (-want +got):\n%s\n%v", diff, err)
	}
	if !errors.Is(err, errNoMatcher) {
		t.Errorf("%v: want errNoMatcher in it", err)
	}
}

func joined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

func TestCallerKeyAndString(t *testing.T) {
	for _, tc := range []struct {
		c         Caller
		key, name string
		str       string
	}{
		{backupSvc, "uid:0 unit:backup.service", "backup.service", "uid=0 user=root unit=backup.service cgroup=/system.slice/backup.service"},
		{nameless, "uid:4242", "uid-4242", "uid=4242 cgroup=/imds-test"},
		{container, "src:172.17.0.5", "172.17.0.5", "src=172.17.0.5"},
		{closed, "unidentified", "unidentified", `unidentified reason="caller's socket closed" peer=169.254.169.254:41000`},
		{Caller{Kind: Host, UID: 5, User: "we ird"}, "uid:5", "we-ird", `uid=5 user="we ird"`},
		{Caller{Kind: Source, Source: netip.MustParseAddrPort("[fd00::5]:80")}, "src:fd00::5", "fd00--5", "src=fd00::5"},
		{Caller{Kind: Host, UID: 1, Unit: `a\x2db:c.service`}, `uid:1 unit:a\x2db:c.service`, "a-x2db-c.service", `uid=1 unit=a\x2db:c.service`},
	} {
		if got := tc.c.Key(); got != tc.key {
			t.Errorf("Key() = %q, want %q", got, tc.key)
		}
		if got := tc.c.Name(); got != tc.name {
			t.Errorf("Name() = %q, want %q", got, tc.name)
		}
		if got := tc.c.String(); got != tc.str {
			t.Errorf("String() = %q, want %q", got, tc.str)
		}
	}
	// Two connections of one process share a key; the port is not in it.
	a, b := www, www
	a.Source, b.Source = netip.MustParseAddrPort("169.254.169.254:1"), netip.MustParseAddrPort("169.254.169.254:2")
	if a.Key() != b.Key() {
		t.Errorf("keys differ by port: %q %q", a.Key(), b.Key())
	}
}

func TestPolicyUnresolved(t *testing.T) {
	p, err := NewPolicy([]Entry{
		{Role: "a", Users: []string{"root", "imds-shim-no-such-user", "61234"}, Groups: []string{"root", "imds-shim-no-such-group", "4242"}},
		{Role: "b", Units: []string{"backup.service"}},
	}, Default{})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, u := range p.Unresolved() {
		paths = append(paths, strings.SplitN(u, ":", 2)[0])
	}
	if diff := cmp.Diff([]string{"roles[0].users[1]", "roles[0].groups[1]"}, paths); diff != "" {
		t.Errorf("Unresolved (-want +got):\n%s\n%q", diff, p.Unresolved())
	}
	if !p.UsesUnits() {
		t.Error("UsesUnits = false with a units entry")
	}
}
