package credentials

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imds-shim/imds-shim/pkg/callers"
)

// Role is one credential set a Set keeps: a role and how it is assumed. The
// top-level role_arn and every roles entry each give one; entries whose
// Role is identical share one refresher.
type Role struct {
	// Key is the YAML key of the entry that gives it: "role_arn",
	// "roles[2]". It is what Policy entries return (callers.Entry.Role).
	Key string
	// Config is the refresher's configuration.
	Config Config
	// Source is an opaque digest of the source credentials (the files
	// the SDK reads once per client): a new one makes new refreshers.
	Source string
	// PerCaller (roles[].caller_source_identity) makes one session per
	// caller identity, with sts:SourceIdentity set to callers.Caller.Name;
	// MaxCallers (roles[].max_caller_sessions) bounds them, least recently
	// used first out.
	PerCaller  bool
	MaxCallers int
}

// SetOptions are a Set's collaborators.
type SetOptions struct {
	// Options are each refresher's; Observer is replaced by NewObserver's.
	Options Options
	// NewClient builds the STS client of one role's configuration; nil
	// means one STSClients for the Set, so that roles with one source
	// share it.
	NewClient func(ctx context.Context, cfg Config) (STSAPI, error)
	// NewObserver returns the metrics observer of one credential set,
	// labelled with label (the role name, see RoleStatus.Label); nil means
	// Options.Observer for every set.
	NewObserver func(label string) Observer
	// Policy picks the entry of a caller (see For); nil gives every caller
	// the role under the key "role_arn".
	Policy *callers.Policy
	// Previous is the set this one replaces on a reload: its refreshers
	// whose Role is unchanged are kept, with their credentials, schedule
	// and sessions, and Fetch then requires every new one to succeed.
	Previous *Set
	// FirstWait bounds how long a caller's first request waits for its own
	// session's first credentials (PerCaller roles); default 900 ms, under
	// botocore's one-second metadata timeout.
	FirstWait time.Duration
	// AuditLog receives one line per caller and credential set first
	// served; nil means Options.Logger.
	AuditLog *slog.Logger
}

// DefaultFirstWait is SetOptions.FirstWait's default.
const DefaultFirstWait = 900 * time.Millisecond

// maxAudited bounds the callers remembered per credential set for the audit
// line; when full the memory starts over (a caller may then be logged again).
const maxAudited = 4096

// Set holds the credential sets of every configured role, keyed by the
// entry that gives them, and answers which set serves a caller. Current,
// Fetch and Run make it the daemon's CredentialEngine.
type Set struct {
	roles  []*member // distinct, in file order
	byKey  map[string]*member
	policy *callers.Policy
	keys   map[*member][]string // the entries each member serves, in this Set
	strict bool
	log    *slog.Logger
	once   sync.Once
}

// member is one distinct credential set.
type member struct {
	role    Role   // Key: the entry that created it
	name    string // the role's name, as listed under security-credentials/
	label   string // metrics label
	arn     RoleARN
	arnText string     // arn.String(), formatted once: For answers it per request
	ref     *Refresher // nil for PerCaller
	client  STSAPI
	opts    Options
	wait    time.Duration
	log     *slog.Logger
	audit   *slog.Logger
	fetched atomic.Bool // the first attempt was made (by this or a previous set)

	// lifetime: refs counts the Sets running it; base ends its sessions.
	base   context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	refs   int
	runCtl context.CancelFunc
	runEnd chan struct{}

	sessions *sessions // PerCaller only

	amu     sync.RWMutex
	audited map[string]string // caller key → access key id last served
	served  atomic.Uint64     // distinct callers served (see maxAudited)
}

// NewSet builds the refreshers of roles, making no STS call. roles must
// include every key the policy's entries return.
func NewSet(ctx context.Context, roles []Role, o SetOptions) (*Set, error) {
	if len(roles) == 0 {
		return nil, errors.New("no role configured")
	}
	if o.NewClient == nil {
		clients := new(STSClients) // the roles of one configuration share their source
		o.NewClient = func(ctx context.Context, cfg Config) (STSAPI, error) { return clients.Client(ctx, cfg) }
	}
	if o.FirstWait <= 0 {
		o.FirstWait = DefaultFirstWait
	}
	log := o.Options.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	audit := o.AuditLog
	if audit == nil {
		audit = log
	}
	s := &Set{byKey: map[string]*member{}, keys: map[*member][]string{}, policy: o.Policy, strict: o.Previous != nil, log: log}
	names := map[string]int{}
	for _, r := range roles {
		arn, err := ParseRoleARN(r.Config.RoleARN)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.Key, err)
		}
		names[arn.Name]++
	}
	for _, r := range roles {
		if m := s.find(r); m != nil {
			s.keys[m] = append(s.keys[m], r.Key)
			s.byKey[r.Key] = m
			continue
		}
		var m *member
		if o.Previous != nil {
			m = o.Previous.find(r)
		}
		if m == nil {
			var err error
			if m, err = newMember(ctx, r, o, log, audit, names); err != nil {
				return nil, fmt.Errorf("%s: %w", r.Key, err)
			}
		}
		s.keys[m] = []string{r.Key}
		s.roles = append(s.roles, m)
		s.byKey[r.Key] = m
	}
	return s, nil
}

func newMember(ctx context.Context, r Role, o SetOptions, log, audit *slog.Logger, names map[string]int) (*member, error) {
	if r.PerCaller && r.MaxCallers < 1 {
		return nil, errors.New("max_caller_sessions must be at least 1")
	}
	arn, _ := ParseRoleARN(r.Config.RoleARN)
	client, err := o.NewClient(ctx, r.Config)
	if err != nil {
		return nil, err
	}
	label := arn.Name
	if names[arn.Name] > 1 {
		label = arn.Name + "@" + r.Key // one role, several option sets
	}
	opts := o.Options
	if o.NewObserver != nil {
		opts.Observer = o.NewObserver(label)
	}
	base, cancel := context.WithCancel(context.Background())
	m := &member{role: r, name: arn.Name, label: label, arn: arn, arnText: arn.String(), client: client, opts: opts, wait: o.FirstWait,
		log: log, audit: audit, base: base, cancel: cancel, audited: map[string]string{}}
	if r.PerCaller {
		m.sessions = &sessions{max: r.MaxCallers, lru: list.New(), byKey: map[string]*list.Element{}}
		return m, nil
	}
	if m.ref, err = New(r.Config, client, opts); err != nil {
		return nil, err
	}
	return m, nil
}

// find returns the member whose Role equals r but for its key.
func (s *Set) find(r Role) *member {
	for _, m := range s.roles {
		a, b := m.role, r
		a.Key, b.Key = "", ""
		if reflect.DeepEqual(a, b) {
			return m
		}
	}
	return nil
}

// Fetch makes the first attempt of every credential set not fetched before
// (retrying transient errors, bounded by ctx), all at once. At start it
// fails only when no set serves: a failing role keeps its callers on 500
// while the others serve, and its refresher keeps trying in Run. A Set made
// with SetOptions.Previous (a reload) fails when any new set fails, so that
// a reload with a wrong role is rejected and the old configuration runs on.
// Per-caller roles have nothing to fetch before their first caller.
func (s *Set) Fetch(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(s.roles))
	for i, m := range s.roles {
		if m.ref == nil || m.fetched.Load() {
			continue
		}
		wg.Go(func() {
			errs[i] = m.ref.Fetch(ctx)
			m.fetched.Store(true)
		})
	}
	wg.Wait()
	var failed []error
	serving := 0
	for i, m := range s.roles {
		switch {
		case errs[i] != nil:
			failed = append(failed, fmt.Errorf("%s (%s): %w", m.name, m.role.Key, errs[i]))
			s.log.Error("first credentials failed; this role's callers get 500 until a refresh succeeds",
				"role", m.arn.String(), "entry", m.role.Key, "err", errs[i])
		case m.ref == nil:
			serving++
		default:
			if _, err := m.ref.Current(); err == nil {
				serving++
			}
		}
	}
	if len(failed) > 0 && (s.strict || serving == 0) {
		return errors.Join(failed...)
	}
	return nil
}

// Acquire marks this Set's credential sets as running, so that a Set
// being replaced can stop without stopping the sets they share. Run calls
// it; the daemon calls it before stopping the previous Set.
func (s *Set) Acquire() {
	s.once.Do(func() {
		for _, m := range s.roles {
			m.acquire()
		}
	})
}

// Discard stops what a Set that never ran started (the sessions of its
// per-caller roles, made while a reload that was then rejected had switched
// the handler over), leaving the sets it shares with a running Set alone.
func (s *Set) Discard() {
	for _, m := range s.roles {
		m.mu.Lock()
		idle := m.refs == 0
		m.mu.Unlock()
		if idle {
			m.cancel()
		}
	}
}

// Run refreshes every credential set until ctx ends, then stops those no
// newer Set runs (and their callers' sessions).
func (s *Set) Run(ctx context.Context) error {
	s.Acquire()
	<-ctx.Done()
	for _, m := range s.roles {
		m.release()
	}
	return nil
}

func (m *member) acquire() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refs++
	if m.refs > 1 || m.runCtl != nil {
		return
	}
	ctx, cancel := context.WithCancel(m.base)
	m.runCtl, m.runEnd = cancel, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		if m.ref != nil {
			_ = m.ref.Run(ctx)
		} else {
			<-ctx.Done()
		}
	}(m.runEnd)
}

func (m *member) release() {
	m.mu.Lock()
	m.refs--
	if m.refs > 0 {
		m.mu.Unlock()
		return
	}
	stop, done := m.runCtl, m.runEnd
	m.runCtl, m.runEnd = nil, nil
	m.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	m.cancel() // ends the sessions' loops
	if m.sessions != nil {
		m.sessions.waitAll()
	}
}

// Current returns the credentials of the top-level role, or, when there is
// none, of the first role that has a set: "is anything served" for status
// lines and metrics. It fails only when no role serves.
func (s *Set) Current() (Credentials, error) {
	if m := s.byKey["role_arn"]; m != nil && m.ref != nil {
		if c, err := m.ref.Current(); err == nil {
			return c, nil
		}
	}
	var errs []error
	for _, m := range s.roles {
		if m.ref == nil {
			if c, err := m.sessions.anyCurrent(); err == nil {
				return c, nil
			}
			continue
		}
		c, err := m.ref.Current()
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return Credentials{}, fmt.Errorf("%w: no caller has asked for a per-caller role yet", ErrNoCredentials)
	}
	return Credentials{}, errors.Join(errs...)
}

// Failing names the roles that have no credentials to serve now, with the
// reason ("web (roles[1]): …"), for /healthz; per-caller roles count as
// failing when every one of their sessions is.
func (s *Set) Failing() []string {
	var out []string
	for _, m := range s.roles {
		var err error
		if m.ref != nil {
			_, err = m.ref.Current()
		} else if m.sessions.len() > 0 {
			_, err = m.sessions.anyCurrent()
		}
		if err != nil {
			out = append(out, fmt.Sprintf("%s (%s): %v", m.name, m.role.Key, err))
		}
	}
	return out
}

// Source is one caller's view of its credential set; its Current records
// the audit line when a set is first served to that caller. It stays valid
// for as long as its Set serves, so a caller's connection can keep it
// (see For).
type Source struct {
	m      *member
	caller callers.Caller
	key    string // caller.Key()
}

// Current returns the caller's credentials: its role's, or for a
// per-caller role its own session's (started again if it was evicted).
func (c *Source) Current() (Credentials, error) {
	var cr Credentials
	var err error
	if c.m.ref != nil {
		cr, err = c.m.ref.Current()
	} else {
		cr, err = c.m.session(c.caller, c.key).Current()
	}
	if err == nil {
		c.m.served1(c.caller, c.key, cr)
	}
	return cr, err
}

// For returns the role c gets and the source of its credentials: the
// Policy's entry (no Policy: the top-level role), or ok false when c gets
// no role. A per-caller role starts c's own session here if it has none.
// The answer holds for c as long as this Set serves: the Policy is part of
// the Set.
func (s *Set) For(c callers.Caller) (arn string, src *Source, ok bool) {
	key := "role_arn"
	if s.policy != nil {
		mt := s.policy.Match(c)
		if !mt.OK {
			return "", nil, false
		}
		key = mt.Role
	}
	m := s.byKey[key]
	if m == nil {
		return "", nil, false
	}
	src = &Source{m: m, caller: c, key: c.Key()}
	if m.ref == nil {
		m.session(c, src.key)
	}
	return m.arnText, src, true
}

// ARNs lists the role ARNs of the set, each once, in file order.
func (s *Set) ARNs() []string {
	var out []string
	seen := map[string]bool{}
	for _, m := range s.roles {
		if a := m.arn.String(); !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}

// served1 writes the audit line the first time c (whose Key is k) is
// served a set.
func (m *member) served1(c callers.Caller, k string, cr Credentials) {
	m.amu.RLock()
	prev, ok := m.audited[k]
	m.amu.RUnlock()
	if ok && prev == cr.AccessKeyID {
		return // the common case: readers only
	}
	m.amu.Lock()
	prev, ok = m.audited[k]
	if ok && prev == cr.AccessKeyID {
		m.amu.Unlock()
		return
	}
	if !ok {
		if len(m.audited) >= maxAudited {
			clear(m.audited)
		}
		m.served.Add(1)
	}
	m.audited[k] = cr.AccessKeyID
	m.amu.Unlock()
	attrs := []any{"uid", "", "unit", c.Unit, "role", m.arn.String(), "access_key_id", cr.AccessKeyID, "entry", m.role.Key}
	switch c.Kind {
	case callers.Host:
		attrs[1] = c.UID
		if c.User != "" {
			attrs = append(attrs, "user", c.User)
		}
	case callers.Source:
		attrs = append(attrs, "src", c.Source.Addr().String())
	default:
		attrs = append(attrs, "unidentified", c.Reason)
	}
	m.audit.Info("caller", attrs...)
}

// RoleStatus is one credential set in `imds-shim status`; it never holds
// a secret.
type RoleStatus struct {
	// Role is the role's name, Entries the keys that give it.
	Role    string   `json:"role"`
	RoleARN string   `json:"role_arn"`
	Entries []string `json:"entries"`
	// Label is the metrics `role` label.
	Label string `json:"label"`
	// Callers counts the distinct callers served a set of this role.
	Callers uint64 `json:"callers_served"`
	// State is the refresher's (nil for per-caller roles).
	State *State `json:"state,omitempty"`
	// PerCaller roles: the sessions open and their bound, and the state of
	// each session (by caller name).
	PerCaller   bool             `json:"per_caller,omitempty"`
	Sessions    int              `json:"sessions,omitempty"`
	MaxSessions int              `json:"max_sessions,omitempty"`
	Session     map[string]State `json:"session_states,omitempty"`
}

// SetStatus is the Set's `imds-shim status` report.
type SetStatus struct {
	Roles []RoleStatus `json:"roles"`
}

// Status implements the daemon's StatusReporter.
func (s *Set) Status(context.Context) (any, error) { return s.Snapshot(), nil }

// Snapshot describes every credential set.
func (s *Set) Snapshot() SetStatus {
	var out SetStatus
	for _, m := range s.roles {
		rs := RoleStatus{Role: m.name, RoleARN: m.arn.String(), Entries: s.keys[m], Label: m.label, Callers: m.served.Load()}
		if m.ref != nil {
			st := m.ref.State()
			rs.State = &st
		} else {
			rs.PerCaller, rs.MaxSessions = true, m.role.MaxCallers
			rs.Session = m.sessions.states()
			rs.Sessions = len(rs.Session)
		}
		out.Roles = append(out.Roles, rs)
	}
	return out
}

// Expiry returns, for each credential set's label, its current set's expiry
// (zero when it serves none; for a per-caller role the latest of its
// sessions'), for the per-role metric.
func (s *Set) Expiry() map[string]time.Time {
	out := map[string]time.Time{}
	for _, m := range s.roles {
		var t time.Time
		if m.ref != nil {
			if c, err := m.ref.Current(); err == nil {
				t = c.Expires
			}
		} else {
			t = m.sessions.latest()
		}
		out[m.label] = t
	}
	return out
}

// sessions are a per-caller role's sessions, least recently used first out.
type sessions struct {
	mu    sync.Mutex
	max   int
	lru   *list.List // of *session, most recent at the front
	byKey map[string]*list.Element
	wg    sync.WaitGroup
}

type session struct {
	name   string
	ref    *Refresher
	first  chan struct{} // closed after the first attempt
	cancel context.CancelFunc
	wait   time.Duration
}

// Current waits, on a session's first use only, up to FirstWait for its
// first set.
func (s *session) Current() (Credentials, error) {
	select {
	case <-s.first:
	default:
		t := time.NewTimer(s.wait)
		select {
		case <-s.first:
		case <-t.C:
		}
		t.Stop()
	}
	return s.ref.Current()
}

// session returns c's session, starting it (and evicting the least
// recently used one beyond the bound) when c (whose Key is key) has none.
func (m *member) session(c callers.Caller, key string) *session {
	ss := m.sessions
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if e, ok := ss.byKey[key]; ok {
		ss.lru.MoveToFront(e)
		return e.Value.(*session)
	}
	cfg := m.role.Config
	cfg.SourceIdentity = c.Name()
	ref, err := New(cfg, m.client, m.opts)
	if err != nil { // cfg was valid for the member; only the name differs
		ref, _ = New(m.role.Config, m.client, m.opts)
	}
	ctx, cancel := context.WithCancel(m.base)
	s := &session{name: c.Name(), ref: ref, first: make(chan struct{}), cancel: cancel, wait: m.wait}
	ss.byKey[key] = ss.lru.PushFront(s)
	for ss.lru.Len() > ss.max {
		old := ss.lru.Back()
		ss.lru.Remove(old)
		for k, e := range ss.byKey {
			if e == old {
				delete(ss.byKey, k)
				break
			}
		}
		o := old.Value.(*session)
		o.cancel()
		m.log.Info("caller session evicted: max_caller_sessions reached", "role", m.arn.String(), "caller", o.name, "max", ss.max)
	}
	ss.wg.Go(func() {
		_ = ref.Fetch(ctx)
		close(s.first)
		_ = ref.Run(ctx)
	})
	return s
}

func (ss *sessions) waitAll() { ss.wg.Wait() }

func (ss *sessions) len() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.lru.Len()
}

func (ss *sessions) each(f func(*session)) {
	ss.mu.Lock()
	var all []*session
	for e := ss.lru.Front(); e != nil; e = e.Next() {
		all = append(all, e.Value.(*session))
	}
	ss.mu.Unlock()
	for _, s := range all {
		f(s)
	}
}

func (ss *sessions) anyCurrent() (Credentials, error) {
	var errs []error
	var out Credentials
	found := false
	ss.each(func(s *session) {
		if found {
			return
		}
		c, err := s.ref.Current()
		if err == nil {
			out, found = c, true
			return
		}
		errs = append(errs, err)
	})
	if found {
		return out, nil
	}
	if len(errs) == 0 {
		return Credentials{}, fmt.Errorf("%w: no caller session yet", ErrNoCredentials)
	}
	return Credentials{}, errs[0]
}

func (ss *sessions) latest() time.Time {
	var t time.Time
	ss.each(func(s *session) {
		if c, err := s.ref.Current(); err == nil && c.Expires.After(t) {
			t = c.Expires
		}
	})
	return t
}

func (ss *sessions) states() map[string]State {
	out := map[string]State{}
	ss.each(func(s *session) { out[s.name] = s.ref.State() })
	return out
}
