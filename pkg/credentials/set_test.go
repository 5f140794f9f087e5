package credentials

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/imds-shim/imds-shim/pkg/callers"
	"github.com/imds-shim/imds-shim/pkg/internal/syncbuf"
)

const (
	hostRole   = "arn:aws:iam::123456789012:role/host"
	webRole    = "arn:aws:iam::123456789012:role/web"
	backupRole = "arn:aws:iam::123456789012:role/backup"
)

// denySTS refuses every role it is asked for, as STS does for a role whose
// trust policy does not name the host.
type denySTS struct {
	mu    sync.Mutex
	calls int
}

func (d *denySTS) AssumeRole(context.Context, *sts.AssumeRoleInput, ...func(*sts.Options)) (*sts.AssumeRoleOutput, error) {
	d.mu.Lock()
	d.calls++
	d.mu.Unlock()
	return nil, apiErr("AccessDenied")
}

func (d *denySTS) AssumeRoleWithWebIdentity(context.Context, *sts.AssumeRoleWithWebIdentityInput, ...func(*sts.Options)) (*sts.AssumeRoleWithWebIdentityOutput, error) {
	return nil, apiErr("AccessDenied")
}

// setHarness builds Sets whose roles each have their own STS: a fakeSTS
// that issues, or a denySTS for the ARNs in deny.
type setHarness struct {
	clock   *fakeClock
	logs    *syncbuf.Buffer
	mu      sync.Mutex
	clients map[string]STSAPI // by role ARN
	deny    map[string]bool
}

func newSetHarness(t *testing.T, deny ...string) *setHarness {
	h := &setHarness{clock: newFakeClock(), logs: &syncbuf.Buffer{}, clients: map[string]STSAPI{}, deny: map[string]bool{}}
	for _, d := range deny {
		h.deny[d] = true
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", h.logs.String())
		}
	})
	return h
}

func (h *setHarness) client(_ context.Context, cfg Config) (STSAPI, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c, ok := h.clients[cfg.RoleARN]; ok {
		return c, nil
	}
	var c STSAPI = &fakeSTS{clock: h.clock}
	if h.deny[cfg.RoleARN] {
		c = &denySTS{}
	}
	h.clients[cfg.RoleARN] = c
	return c, nil
}

func (h *setHarness) fake(arn string) *fakeSTS {
	h.mu.Lock()
	defer h.mu.Unlock()
	f, _ := h.clients[arn].(*fakeSTS)
	return f
}

func (h *setHarness) newSet(t *testing.T, roles []Role, pol *callers.Policy, prev *Set) *Set {
	t.Helper()
	s, err := NewSet(t.Context(), roles, SetOptions{
		Options:   Options{Logger: slog.New(slog.NewTextHandler(h.logs, nil)), Clock: h.clock, FetchAttempts: 1},
		NewClient: h.client,
		Policy:    pol,
		Previous:  prev,
		FirstWait: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func role(key, arn string) Role {
	return Role{Key: key, Config: Config{RoleARN: arn, SessionName: "imds-shim-test"}}
}

func policy(t *testing.T, def string, entries ...callers.Entry) *callers.Policy {
	t.Helper()
	p, err := callers.NewPolicy(entries, callers.Default{Role: def})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	root   = callers.Caller{Kind: callers.Host, UID: 0, User: "root", HasGID: true, Group: "root"}
	nobody = callers.Caller{Kind: callers.Host, UID: 65534, User: "nobody", HasGID: true, GID: 65534, Group: "nogroup"}
	backup = callers.Caller{Kind: callers.Host, UID: 0, User: "root", Unit: "backup.service", Slices: []string{"system.slice"}}
	unid   = callers.Caller{Reason: "socket closed", Source: netip.MustParseAddrPort("169.254.169.254:40000")}
	cont   = callers.Caller{Kind: callers.Source, Source: netip.MustParseAddrPort("172.17.0.5:40000")}
)

// roleOf is the ARN c gets from s and whether its credentials serve.
func roleOf(s *Set, c callers.Caller) (string, bool) {
	arn, src, ok := s.For(c)
	if !ok {
		return "none", false
	}
	_, err := src.Current()
	return arn, err == nil
}

func TestSetGivesEachCallerItsEntry(t *testing.T) {
	h := newSetHarness(t)
	pol := policy(t, "role_arn",
		callers.Entry{Role: "roles[0]", Units: []string{"backup.service"}},
		callers.Entry{Role: "roles[1]", Users: []string{"nobody"}},
		callers.Entry{Role: "roles[2]", Sources: []netip.Prefix{netip.MustParsePrefix("172.17.0.0/16")}})
	s := h.newSet(t, []Role{role("role_arn", hostRole), role("roles[0]", backupRole), role("roles[1]", webRole), role("roles[2]", webRole)}, pol, nil)
	if err := s.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	// roles[1] and roles[2] are the same set: one refresher, one STS call.
	if n := h.fake(webRole).numCalls(); n != 1 {
		t.Errorf("web role assumed %d times, want 1 (entries with equal options share a refresher)", n)
	}
	for _, tc := range []struct {
		c    callers.Caller
		want string
	}{
		{root, hostRole}, {nobody, webRole}, {backup, backupRole}, {cont, webRole}, {unid, "none"},
	} {
		got, serving := roleOf(s, tc.c)
		if got != tc.want || (got != "none" && !serving) {
			t.Errorf("%s gets %s (serving %v), want %s", tc.c, got, serving, tc.want)
		}
	}
	if got := s.ARNs(); strings.Join(got, " ") != hostRole+" "+backupRole+" "+webRole {
		t.Errorf("ARNs = %v", got)
	}
}

func TestSetWithoutPolicyServesEveryone(t *testing.T) {
	h := newSetHarness(t)
	s := h.newSet(t, []Role{role("role_arn", hostRole)}, nil, nil)
	if err := s.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []callers.Caller{root, nobody, unid, cont} {
		if got, ok := roleOf(s, c); got != hostRole || !ok {
			t.Errorf("%s gets %s, want %s as before roles existed", c, got, hostRole)
		}
	}
}

func TestSetStartsWhileOneRoleFails(t *testing.T) {
	h := newSetHarness(t, webRole)
	pol := policy(t, "role_arn", callers.Entry{Role: "roles[0]", Users: []string{"nobody"}})
	s := h.newSet(t, []Role{role("role_arn", hostRole), role("roles[0]", webRole)}, pol, nil)
	if err := s.Fetch(t.Context()); err != nil {
		t.Fatalf("Fetch = %v, want nil: the host role serves", err)
	}
	if _, ok := roleOf(s, root); !ok {
		t.Error("root's role does not serve")
	}
	if got, ok := roleOf(s, nobody); got != webRole || ok {
		t.Errorf("nobody gets %s serving=%v, want %s without credentials (500)", got, ok, webRole)
	}
	f := s.Failing()
	if len(f) != 1 || !strings.Contains(f[0], "web (roles[0])") || !strings.Contains(f[0], "AccessDenied") {
		t.Errorf("Failing = %q, want the web role named with its error", f)
	}
	var st *State
	for _, r := range s.Snapshot().Roles {
		if r.Role == "web" {
			st = r.State
		}
	}
	if st == nil || st.Serving || st.LastErrorClass != ClassAccessDenied {
		t.Errorf("web's status = %+v, want failing with access_denied", st)
	}
	if _, err := s.Current(); err != nil {
		t.Errorf("Current = %v, want the host role's set", err)
	}
}

func TestSetFailsWhenNoRoleServes(t *testing.T) {
	h := newSetHarness(t, hostRole, webRole)
	pol := policy(t, "role_arn", callers.Entry{Role: "roles[0]", Users: []string{"nobody"}})
	s := h.newSet(t, []Role{role("role_arn", hostRole), role("roles[0]", webRole)}, pol, nil)
	err := s.Fetch(t.Context())
	if err == nil || !strings.Contains(err.Error(), "host (role_arn)") || !strings.Contains(err.Error(), "web (roles[0])") {
		t.Fatalf("Fetch = %v, want both roles named", err)
	}
}

func TestSetReloadKeepsUnchangedRefreshers(t *testing.T) {
	h := newSetHarness(t, backupRole)
	pol := policy(t, "role_arn", callers.Entry{Role: "roles[0]", Users: []string{"nobody"}})
	old := h.newSet(t, []Role{role("role_arn", hostRole), role("roles[0]", webRole)}, pol, nil)
	if err := old.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	old.Acquire() // running before Run's goroutine gets to it
	go func() { old.Run(ctx); close(done) }()

	// The host role is unchanged, web's duration changed: only web is
	// assumed again.
	web := role("roles[0]", webRole)
	web.Config.Duration = 2 * time.Hour
	next := h.newSet(t, []Role{role("role_arn", hostRole), web}, pol, old)
	if err := next.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := h.fake(hostRole).numCalls(); n != 1 {
		t.Errorf("host role assumed %d times across the reload, want 1 (kept)", n)
	}
	if n := h.fake(webRole).numCalls(); n != 2 {
		t.Errorf("web role assumed %d times, want 2 (its options changed)", n)
	}
	if a, b := old.byKey["role_arn"], next.byKey["role_arn"]; a != b {
		t.Error("the unchanged role got a new refresher")
	}
	// The switch: the new set takes over, the old one stops; the kept
	// refresher keeps running, the replaced one stops.
	next.Acquire()
	gone := old.byKey["roles[0]"]
	gone.mu.Lock()
	goneEnd := gone.runEnd
	gone.mu.Unlock()
	cancel()
	<-done
	kept := next.byKey["role_arn"]
	kept.mu.Lock()
	running := kept.runCtl != nil
	kept.mu.Unlock()
	if !running {
		t.Error("the kept refresher stopped with the old set")
	}
	select {
	case <-goneEnd: // Run returned before the old set's Run did
	default:
		t.Error("the replaced refresher still runs")
	}

	// A reload adding a role STS refuses is rejected whole.
	bad := h.newSet(t, []Role{role("role_arn", hostRole), web, role("roles[1]", backupRole)}, pol, next)
	if err := bad.Fetch(t.Context()); err == nil || !strings.Contains(err.Error(), "backup (roles[1])") {
		t.Errorf("Fetch of a reload with a refused new role = %v, want an error naming it", err)
	}
	rctx, rcancel := context.WithCancel(t.Context())
	rcancel()
	next.Run(rctx)
}

func TestSetPerCallerSessions(t *testing.T) {
	h := newSetHarness(t)
	pol := policy(t, "", callers.Entry{Role: "roles[0]", Users: []string{"0", "65534", "1001"}})
	r := role("roles[0]", webRole)
	r.PerCaller, r.MaxCallers = true, 2
	s := h.newSet(t, []Role{r}, pol, nil)
	if err := s.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := h.fake(webRole).numCalls(); n != 0 {
		t.Fatalf("%d STS calls before any caller, want 0", n)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	alice := callers.Caller{Kind: callers.Host, UID: 1001, User: "alice"}
	for _, c := range []callers.Caller{root, nobody, root} {
		if _, ok := roleOf(s, c); !ok {
			t.Fatalf("%s gets no credentials from its session", c)
		}
	}
	calls := h.fake(webRole).log()
	if n := strings.Count(calls, "AssumeRole"); n != 2 {
		t.Errorf("%d AssumeRole calls for 2 callers (one asking twice), want 2:\n%s", n, calls)
	}
	for _, id := range []string{"source_identity=root", "source_identity=nobody"} {
		if !strings.Contains(calls, id) {
			t.Errorf("no session with %s:\n%s", id, calls)
		}
	}
	// A third caller evicts the least recently used (nobody; root was
	// used last).
	if _, ok := roleOf(s, alice); !ok {
		t.Fatal("alice gets no credentials")
	}
	st := s.Snapshot().Roles[0]
	if st.Sessions != 2 || st.Session["nobody"].RoleARN != "" || st.Session["root"].RoleARN == "" || st.Session["alice"].RoleARN == "" {
		t.Errorf("sessions after eviction = %d %v, want root and alice", st.Sessions, st.Session)
	}
	if !strings.Contains(h.logs.String(), "caller session evicted") {
		t.Error("eviction not logged")
	}
	if st.Callers != 3 {
		t.Errorf("callers served = %d, want 3", st.Callers)
	}
}

// A Source stays valid while its Set serves, as a caller's connection keeps
// it: when the caller's session has been evicted meanwhile, the next
// Current starts it again, with that caller's source identity.
func TestSetSourceOutlivesEviction(t *testing.T) {
	h := newSetHarness(t)
	pol := policy(t, "", callers.Entry{Role: "roles[0]", Users: []string{"0", "65534"}})
	r := role("roles[0]", webRole)
	r.PerCaller, r.MaxCallers = true, 1
	s := h.newSet(t, []Role{r}, pol, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	_, rootSrc, ok := s.For(root)
	if !ok {
		t.Fatal("root gets no role")
	}
	if _, err := rootSrc.Current(); err != nil {
		t.Fatal(err)
	}
	if _, ok := roleOf(s, nobody); !ok { // evicts root's session (at most 1)
		t.Fatal("nobody gets no credentials")
	}
	if _, err := rootSrc.Current(); err != nil {
		t.Fatalf("root's kept Source after its session was evicted: %v", err)
	}
	st := s.Snapshot().Roles[0]
	if st.Sessions != 1 || st.Session["root"].RoleARN == "" {
		t.Errorf("sessions = %d %v, want root's, started again", st.Sessions, st.Session)
	}
	if calls := h.fake(webRole).log(); strings.Count(calls, "source_identity=root") != 2 {
		t.Errorf("root's session was not started again:\n%s", calls)
	}
}

func TestSetAuditsOncePerCallerAndSet(t *testing.T) {
	h := newSetHarness(t)
	audit := &syncbuf.Buffer{}
	s, err := NewSet(t.Context(), []Role{role("role_arn", hostRole)}, SetOptions{
		Options:   Options{Clock: h.clock, FetchAttempts: 1},
		NewClient: h.client,
		AuditLog:  slog.New(slog.NewTextHandler(audit, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		roleOf(s, backup)
		roleOf(s, nobody)
	}
	lines := strings.Split(strings.TrimSpace(audit.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("audit lines = %d, want one per caller:\n%s", len(lines), audit)
	}
	want := "msg=caller uid=0 unit=backup.service role=" + hostRole + " access_key_id=ASIAFAKE0001"
	if !strings.Contains(lines[0], want) {
		t.Errorf("audit line %q lacks %q", lines[0], want)
	}
	for _, secret := range []string{"secret-0001", "token-0001"} {
		if strings.Contains(audit.String(), secret) {
			t.Errorf("audit log holds %s", secret)
		}
	}
}

func TestSetPerCallerOnlyIsNotFailingBeforeItsFirstCaller(t *testing.T) {
	h := newSetHarness(t)
	r := role("roles[0]", webRole)
	r.PerCaller, r.MaxCallers = true, 4
	s := h.newSet(t, []Role{r}, policy(t, "", callers.Entry{Role: "roles[0]", Users: []string{"nobody"}}), nil)
	if err := s.Fetch(t.Context()); err != nil {
		t.Fatalf("Fetch = %v, want nil: nothing to fetch before a caller", err)
	}
	if _, err := s.Current(); err == nil {
		t.Error("Current gave credentials before any caller had a session")
	}
	if f := s.Failing(); len(f) != 0 {
		t.Errorf("Failing = %q before any caller, want none", f)
	}
}

func TestSetDiscardStopsOnlyWhatItStarted(t *testing.T) {
	h := newSetHarness(t)
	pol := policy(t, "role_arn", callers.Entry{Role: "roles[0]", Users: []string{"nobody"}})
	old := h.newSet(t, []Role{role("role_arn", hostRole)}, nil, nil)
	if err := old.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	old.Acquire()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go old.Run(ctx)
	web := role("roles[0]", webRole)
	web.PerCaller, web.MaxCallers = true, 4
	next := h.newSet(t, []Role{role("role_arn", hostRole), web}, pol, old)
	if err := next.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, ok := roleOf(next, nobody); !ok { // a session, started while the reload was on
		t.Fatal("no session")
	}
	next.Discard()
	ended := make(chan struct{})
	go func() { next.byKey["roles[0]"].sessions.waitAll(); close(ended) }()
	select {
	case <-ended: // the session's loop has returned
	case <-time.After(10 * time.Second):
		t.Fatal("the discarded set's session still runs")
	}
	if err := old.byKey["role_arn"].base.Err(); err != nil {
		t.Errorf("the shared refresher was stopped: %v", err)
	}
}
