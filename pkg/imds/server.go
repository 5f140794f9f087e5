package imds

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/imds-shim/imds-shim/pkg/credentials"
)

// CredentialSource hands out the current credential set. It must not block
// on the network: the handler calls it on every credential request.
// It returns credentials.ErrNoCredentials (possibly wrapped) when no valid
// set exists.
type CredentialSource interface {
	Current() (credentials.Credentials, error)
}

// Roles gives each caller its own role (the configuration's `roles`). A
// CredentialSource that also implements Roles is asked, on each request
// under meta-data/iam/ and for the identity document, which role the
// request's caller gets; it must answer from memory.
type Roles interface {
	// RoleFor returns the ARN of the role r's caller gets and the source
	// of its credentials; ok is false when the caller gets no role.
	RoleFor(r *http.Request) (arn string, src CredentialSource, ok bool)
}

// Observer receives what the handler does, for metrics. Implementations
// must be safe for concurrent use and fast; class is one of the Class*
// constants.
type Observer interface {
	Request(class string, status int)
	TokenIssued()
	CredentialsUnavailable(err error)
}

// Request path classes reported to Observer.Request: a small fixed set, so
// that metrics labels stay bounded whatever paths clients send.
const (
	ClassToken       = "token"
	ClassCredentials = "credentials" // everything under meta-data/iam/
	ClassMetadata    = "metadata"
	ClassDynamic     = "dynamic"
	ClassUserData    = "userdata"
	ClassOther       = "other"
)

// NopObserver ignores everything.
type NopObserver struct{}

// Request implements Observer.
func (NopObserver) Request(string, int) {}

// TokenIssued implements Observer.
func (NopObserver) TokenIssued() {}

// CredentialsUnavailable implements Observer.
func (NopObserver) CredentialsUnavailable(error) {}

// Options are the server's collaborators.
type Options struct {
	// Logger defaults to discarding. Requests are logged at debug level.
	Logger *slog.Logger
	// Observer defaults to NopObserver.
	Observer Observer
	// TokenKey is the HMAC key for session tokens (at least TokenKeySize
	// bytes, see LoadOrCreateTokenKey). Nil means a random key in memory:
	// tokens then do not survive a restart.
	TokenKey []byte
	// Now defaults to time.Now.
	Now func() time.Time
	// TokenBinding, when set, returns the caller binding for a request:
	// a token is issued for the binding of the request that asked for
	// it and accepted only from requests with the same binding (for
	// example the caller's uid or unit). Nil binds every token to "".
	TokenBinding func(*http.Request) string
	// Host supplies the facts for on-prem defaults. Nil means DiscoverHost
	// on this host (again on every Update, to follow a renamed host).
	Host *HostFacts
}

// Server is the IMDS http.Handler. It is safe for concurrent use; Update
// swaps its configuration atomically.
type Server struct {
	key      *tokenKey
	log      *slog.Logger
	obs      Observer
	now      func() time.Time
	host     *HostFacts
	binding  func(*http.Request) string
	state    atomic.Pointer[state]
	lastWarn atomic.Int64 // Unix nanoseconds of the last "credentials unavailable" log
}

// state is everything derived from one Config; requests load it once, so
// an Update never changes the answer to a request already in flight.
type state struct {
	cfg      Config
	src      CredentialSource
	roles    Roles // nil: one role for every caller
	required bool
	tree     tree
	d        derived
	hosts    []string
	single   *roleView            // the one role, without Roles
	views    map[string]*roleView // by ARN, with Roles
	iamDir   *node                // meta-data/iam's listing, with Roles
	// metaNoIAM is meta-data/'s listing for a caller without a role.
	metaNoIAM response
}

// roleView is what one role's callers see under meta-data/iam/ and in the
// identity document, rendered when the configuration is applied.
type roleView struct {
	arn      string
	name     string
	d        derived // with this role's ARN, profile and account
	listing  response
	infoFall response // iam/info while no credentials are available
	identity response // the generated identity document
	docs     atomic.Pointer[credDocs]
}

// credDocs are the credential documents rendered for one credential set.
type credDocs struct {
	creds                  credentials.Credentials
	legacy, extended, info response
}

// NewServer validates cfg, reads its metadata directory and returns a
// handler serving it with credentials from src.
func NewServer(cfg Config, src CredentialSource, opts Options) (*Server, error) {
	s := &Server{log: opts.Logger, obs: opts.Observer, now: opts.Now, host: opts.Host, binding: opts.TokenBinding}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.obs == nil {
		s.obs = NopObserver{}
	}
	if s.now == nil {
		s.now = time.Now
	}
	key := opts.TokenKey
	if key == nil {
		key = make([]byte, TokenKeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("generating token key: %w", err)
		}
	}
	k, err := newTokenKey(key)
	if err != nil {
		return nil, err
	}
	s.key = k
	st, err := s.newState(cfg, src)
	if err != nil {
		return nil, err
	}
	s.state.Store(st)
	return s, nil
}

// Update validates cfg and swaps it in atomically. On error nothing
// changes. Tokens issued before stay valid (the key is not part of cfg);
// requests in flight finish with the configuration they started with.
func (s *Server) Update(cfg Config, src CredentialSource) error {
	st, err := s.newState(cfg, src)
	if err != nil {
		return err
	}
	s.state.Store(st)
	return nil
}

func (s *Server) newState(cfg Config, src CredentialSource) (*state, error) {
	if src == nil {
		return nil, errors.New("credential source is nil")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("validating imds config: %w", err)
	}
	var host HostFacts
	if s.host != nil {
		host = *s.host
	} else {
		host = DiscoverHost(cfg.MachineIDPath)
	}
	now := s.now()
	d, err := resolve(cfg, host, now)
	if err != nil {
		return nil, err
	}
	var dir map[string][]byte
	if cfg.MetadataDir != "" {
		if dir, err = readMetadataDir(cfg.MetadataDir); err != nil {
			return nil, err
		}
	}
	l := leaves(cfg, d, dir)
	t, err := build(l)
	if err != nil {
		return nil, fmt.Errorf("building metadata tree: %w", err)
	}
	st := &state{
		cfg:      cfg,
		src:      src,
		required: cfg.TokenMode != TokenOptional,
		tree:     t,
		d:        d,
		hosts:    cfg.AllowedHosts,
	}
	view := func(arn string) (*roleView, error) {
		rd := d
		role, err := parseRoleARN(arn)
		if err != nil {
			return nil, err
		}
		rd.role = role
		if arn != cfg.RoleARN || cfg.InstanceProfileARN == "" {
			rd.profileARN = "arn:" + role.partition + ":iam::" + role.account + ":instance-profile" + role.path + role.name
		}
		if arn != cfg.RoleARN || cfg.InstanceProfileID == "" {
			rd.profileID = defaultInstanceProfileID(arn)
		}
		v := &roleView{arn: arn, name: role.name, d: rd,
			listing:  newResponse([]byte(role.name), hdrTextPlain),
			infoFall: newResponse(iamInfo(rd, now), hdrTextPlain)}
		if n := t["dynamic/instance-identity/document"]; n != nil {
			v.identity = n.resp
			if n.kind == kindIdentity {
				v.identity = newResponse(identityDocument(rd, l), hdrTextPlain)
			}
		}
		return v, nil
	}
	if r, ok := src.(Roles); ok && len(cfg.Roles) > 0 {
		st.roles = r
		st.views = map[string]*roleView{}
		st.iamDir = &node{kind: kindIAMDir, resp: t["meta-data/iam"].resp}
		var kept []string
		for l := range strings.SplitSeq(string(t["meta-data"].resp.body), "\n") {
			if l != "iam/" {
				kept = append(kept, l)
			}
		}
		st.metaNoIAM = newResponse([]byte(strings.Join(kept, "\n")), hdrTextPlain)
		for _, arn := range append([]string{cfg.RoleARN}, cfg.Roles...) {
			if arn == "" || st.views[arn] != nil {
				continue
			}
			if st.views[arn], err = view(arn); err != nil {
				return nil, err
			}
		}
		return st, nil
	}
	if st.single, err = view(cfg.RoleARN); err != nil {
		return nil, err
	}
	return st, nil
}

func iamInfo(d derived, updated time.Time) []byte {
	return renderJSON([]jsonField{
		{"Code", str("Success")},
		{"LastUpdated", str(timestamp(updated))},
		{"InstanceProfileArn", str(d.profileARN)},
		{"InstanceProfileId", str(d.profileID)},
	})
}

func (v *roleView) render(c credentials.Credentials) *credDocs {
	account := c.AccountID
	if account == "" {
		account = v.d.role.account
	}
	fields := []jsonField{
		{"Code", str("Success")},
		{"LastUpdated", str(timestamp(c.LastUpdated))},
		{"Type", str("AWS-HMAC")},
		{"AccessKeyId", str(c.AccessKeyID)},
		{"SecretAccessKey", str(c.SecretAccessKey)},
		{"Token", str(c.SessionToken)},
		{"Expiration", str(timestamp(c.Expires))},
	}
	return &credDocs{
		creds:    c,
		legacy:   newResponse(renderJSON(fields), hdrTextPlain),
		extended: newResponse(renderJSON(append(fields, jsonField{"AccountId", str(account)})), hdrTextPlain),
		info:     newResponse(iamInfo(v.d, c.LastUpdated), hdrTextPlain),
	}
}

func sameCreds(a, b *credentials.Credentials) bool {
	return a.AccessKeyID == b.AccessKeyID && a.SecretAccessKey == b.SecretAccessKey &&
		a.SessionToken == b.SessionToken && a.Expires.Equal(b.Expires) &&
		a.LastUpdated.Equal(b.LastUpdated) && a.AccountID == b.AccountID && a.RoleARN == b.RoleARN
}

// Reasons a set from the source is not served even without an error.
var (
	errIncomplete = errors.New("credential set has an empty key, secret or session token")
	errExpired    = errors.New("credential set has expired")
	errNoRole     = errors.New("credential set is for a different role")
)

// credentials returns the rendered documents for src's current set, or the
// reason there is none to serve. One rendering is kept per role: callers of
// a per-caller role that alternate re-render, which costs only time.
func (s *Server) credentials(v *roleView, src CredentialSource, now time.Time) (*credDocs, error) {
	c, err := src.Current()
	if err != nil {
		return nil, err
	}
	switch {
	case c.AccessKeyID == "" || c.SecretAccessKey == "" || c.SessionToken == "":
		return nil, errIncomplete
	case !c.Expires.After(now):
		return nil, errExpired
	case c.RoleARN != "" && c.RoleARN != v.arn:
		return nil, errNoRole
	}
	docs := v.docs.Load()
	if docs == nil || !sameCreds(&docs.creds, &c) {
		docs = v.render(c)
		v.docs.Store(docs)
	}
	return docs, nil
}

// The nodes under meta-data/iam/ with Roles: what each caller sees there
// depends on its role, so they are answered per request.
var (
	nodeIAMInfo     = &node{kind: kindIAMInfo}
	nodeRoleListing = &node{kind: kindRoleListing}
	nodeCredentials = &node{kind: kindCredentials}
	nodeExtended    = &node{kind: kindExtended}
)

// iamNode returns the node for rest, a path under meta-data/iam, and the
// role name it asks for.
func (st *state) iamNode(rest string) (*node, string) {
	p, ok := strings.CutPrefix(rest, "meta-data/iam")
	switch {
	case !ok:
		return nil, ""
	case p == "":
		return st.iamDir, ""
	case p == "/info":
		return nodeIAMInfo, ""
	case p == "/security-credentials", p == "/security-credentials-extended":
		return nodeRoleListing, ""
	}
	if name, ok := strings.CutPrefix(p, "/security-credentials/"); ok && name != "" && !strings.Contains(name, "/") {
		return nodeCredentials, name
	}
	if name, ok := strings.CutPrefix(p, "/security-credentials-extended/"); ok && name != "" && !strings.Contains(name, "/") {
		return nodeExtended, name
	}
	return nil, ""
}

// role returns the view and credential source of r's caller; nil when the
// caller gets no role.
func (st *state) role(r *http.Request) (*roleView, CredentialSource) {
	if st.roles == nil {
		return st.single, st.src
	}
	arn, src, ok := st.roles.RoleFor(r)
	if !ok {
		return nil, nil
	}
	v := st.views[arn]
	if v == nil || src == nil {
		return nil, nil // a role the configuration did not announce: none
	}
	return v, src
}

// warnEvery rate-limits the "credentials unavailable" log; the observer
// still sees every occurrence.
const warnEvery = 10 * time.Second

func (s *Server) unavailable(err error, now time.Time) {
	s.obs.CredentialsUnavailable(err)
	last := s.lastWarn.Load()
	if n := now.UnixNano(); n-last >= int64(warnEvery) && s.lastWarn.CompareAndSwap(last, n) {
		s.log.Warn("credentials unavailable, answering 500", "err", err)
	}
}

// Header names the handler reads or sets.
const (
	hToken        = "X-Aws-Ec2-Metadata-Token"
	hTokenTTL     = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
	hForwardedFor = "X-Forwarded-For"
)

// errorPage renders EC2's XHTML error page for status. EC2 serves its 404
// page as text/html and the others as text/plain (a captured EC2 405 on
// the token path says Content-Type: text/plain); its 403 has no body at
// all (captures in aws-sdk-kotlin #627 and aws_credentials #47:
// Content-Length: 0, Content-Type: text/plain). The system identifier is
// indented by nine spaces, as in every published capture of the page
// (coreos-overlay #142, terraform-provider-vault #327, s3fs-fuse #1605).
func errorPage(status int) response {
	if status == http.StatusForbidden {
		return newResponse([]byte{}, hdrTextPlain)
	}
	title := strconv.Itoa(status) + " - " + http.StatusText(status)
	body := `<?xml version="1.0" encoding="iso-8859-1"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
         "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title>` + title + `</title>
 </head>
 <body>
  <h1>` + title + `</h1>
 </body>
</html>`
	ctype := hdrTextPlain
	if status == http.StatusNotFound {
		ctype = hdrTextHTML
	}
	return newResponse([]byte(body), ctype)
}

// The endpoint's own addresses: traffic a host sends to 169.254.169.254 on
// lo arrives with that source address.
var (
	endpointV4 = netip.MustParseAddr("169.254.169.254")
	endpointV6 = netip.MustParseAddr("fd00:ec2::254")
)

// sourceAllowed admits loopback, the configured ranges, and the endpoint
// address itself — but that last one only on a connection that arrived on a
// local address (loopback or the endpoint): traffic this host sends to
// 169.254.169.254 on lo carries that source, while on a listener reachable
// from the network any neighbour could claim it.
func (st *state) sourceAllowed(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	a := ap.Addr().Unmap().WithZone("")
	if a.IsLoopback() {
		return true
	}
	if a == endpointV4 || a == endpointV6 {
		if l, ok := localAddr(r); ok && (l.IsLoopback() || l == endpointV4 || l == endpointV6) {
			return true
		}
	}
	for _, p := range st.cfg.AllowedCIDRs {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// hostAllowed is the DNS-rebinding check: a browser lured to a hostile
// name that resolves to the endpoint still sends that name as Host. SDKs
// send the endpoint's address, or with AWS_EC2_METADATA_SERVICE_ENDPOINT
// whatever host that URL names, so loopback names and the address the
// connection arrived on are accepted too, with any port. An empty Host
// (HTTP/1.0) cannot come from a browser and is accepted.
func (st *state) hostAllowed(r *http.Request) bool {
	h := r.Host
	if h == "" {
		return true
	}
	h = stripPort(h)
	h = strings.TrimSuffix(h, ".")
	if strings.EqualFold(h, "localhost") || ec2HostName(h, st.d.region) {
		return true
	}
	if a, err := netip.ParseAddr(h); err == nil {
		a = a.Unmap().WithZone("")
		if a.IsLoopback() || a == endpointV4 || a == endpointV6 {
			return true
		}
		l, ok := localAddr(r)
		return ok && l == a
	}
	for _, a := range st.hosts {
		if strings.EqualFold(h, a) {
			return true
		}
	}
	return false
}

// localAddr is the address r's connection arrived on (unmapped, no zone):
// net/http puts the listener's *net.TCPAddr in the request's context.
func localAddr(r *http.Request) (netip.Addr, bool) {
	la, ok := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr)
	if !ok {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(la.IP)
	return a.Unmap(), ok
}

func stripPort(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			return h[1:i]
		}
		return h
	}
	if i := strings.IndexByte(h, ':'); i >= 0 && strings.IndexByte(h[i+1:], ':') < 0 {
		return h[:i]
	}
	return h
}

func isVersion(v string) bool {
	if v == "latest" { // nearly every request
		return true
	}
	for _, x := range versions {
		if v == x {
			return true
		}
	}
	return false
}

func classify(rest string) string {
	switch {
	case rest == "meta-data/iam" || strings.HasPrefix(rest, "meta-data/iam/"):
		return ClassCredentials
	case rest == "meta-data" || strings.HasPrefix(rest, "meta-data/"):
		return ClassMetadata
	case rest == "dynamic" || strings.HasPrefix(rest, "dynamic/"):
		return ClassDynamic
	case rest == "user-data":
		return ClassUserData
	}
	return ClassOther
}

// ServeHTTP answers one IMDS request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := s.state.Load()
	class, status := s.serve(st, w, r)
	s.obs.Request(class, status)
	if s.log.Enabled(r.Context(), slog.LevelDebug) {
		s.log.LogAttrs(r.Context(), slog.LevelDebug, "request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.String("remote", r.RemoteAddr), slog.String("class", class), slog.Int("status", status))
	}
}

func (s *Server) serve(st *state, w http.ResponseWriter, r *http.Request) (string, int) {
	h := w.Header()
	h.Set("Server", "EC2ws")
	path := strings.TrimLeft(cleanPath(r.URL.Path), "/")
	version, rest, _ := strings.Cut(path, "/")
	slash := strings.HasSuffix(rest, "/")
	rest = strings.TrimSuffix(rest, "/")
	class := ClassOther
	known := isVersion(version)
	if known {
		class = classify(rest)
	}
	isToken := known && rest == "api/token"
	if isToken {
		class = ClassToken
	}

	if !st.sourceAllowed(r) || !st.hostAllowed(r) {
		return class, s.fail(w, r, http.StatusForbidden)
	}
	if code := ec2RequestGate(r, isToken, slash); code != 0 {
		return class, s.fail(w, r, code)
	}
	if isToken && version == "latest" {
		if r.Method != http.MethodPut {
			h.Set("Allow", "PUT")
			return class, s.fail(w, r, http.StatusMethodNotAllowed)
		}
		return class, s.issueToken(w, r)
	}
	if r.Method == http.MethodPut && isToken {
		// Only /latest/api/token issues tokens (EC2 answers 403 here).
		return class, s.fail(w, r, http.StatusForbidden)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		return class, s.fail(w, r, http.StatusMethodNotAllowed)
	}

	now := s.now()
	if v := r.Header.Values(hToken); len(v) > 0 && v[0] != "" {
		exp, ok := s.key.verify(v[0], s.callerBinding(r))
		left := exp.Sub(now)
		if len(v) > 1 || !ok || left <= 0 {
			return class, s.fail(w, r, http.StatusUnauthorized)
		}
		h.Set(hTokenTTL, strconv.FormatInt(int64((left+time.Second-1)/time.Second), 10))
	} else if st.required {
		return class, s.fail(w, r, http.StatusUnauthorized)
	}

	if path == "" {
		return class, s.write(w, r, http.StatusOK, rootListing)
	}
	if !known {
		return class, s.fail(w, r, http.StatusNotFound)
	}
	var n *node
	reqRole := "" // the role name a credentials path asks for
	if st.roles != nil && class == ClassCredentials {
		n, reqRole = st.iamNode(rest)
	} else {
		n = st.tree[rest]
	}
	if n == nil {
		return class, s.fail(w, r, http.StatusNotFound)
	}
	if n.kind == kindStatic && rest == "meta-data" && st.roles != nil {
		// EC2 lists iam/ only on an instance with a profile.
		if v, _ := st.role(r); v == nil {
			return class, s.write(w, r, http.StatusOK, st.metaNoIAM)
		}
	}
	if n.kind == kindStatic {
		return class, s.write(w, r, http.StatusOK, n.resp)
	}
	if n.kind == kindIdentity && st.roles == nil {
		return class, s.write(w, r, http.StatusOK, n.resp)
	}
	v, src := st.role(r)
	switch {
	case n.kind == kindIdentity && v == nil:
		return class, s.write(w, r, http.StatusOK, n.resp) // the top-level role's, or the first's
	case n.kind == kindIdentity:
		return class, s.write(w, r, http.StatusOK, v.identity)
	case v == nil:
		// No role for this caller: EC2 without an instance profile.
		return class, s.fail(w, r, http.StatusNotFound)
	case n.kind == kindIAMDir:
		return class, s.write(w, r, http.StatusOK, n.resp)
	case n.kind == kindRoleListing:
		return class, s.write(w, r, http.StatusOK, v.listing)
	case n.kind == kindIAMInfo:
		if docs, err := s.credentials(v, src, now); err == nil {
			return class, s.write(w, r, http.StatusOK, docs.info)
		}
		return class, s.write(w, r, http.StatusOK, v.infoFall)
	case st.roles != nil && reqRole != v.name:
		return class, s.fail(w, r, http.StatusNotFound) // another caller's role
	}
	docs, err := s.credentials(v, src, now)
	if err != nil {
		// 500, never 200 with Code Success: every SDK treats it as "no
		// credentials" (botocore after its attempts, Go retries then
		// errors, JS errors, Java errors without a legacy fallback, which
		// only a 404 would trigger).
		s.unavailable(err, now)
		return class, s.fail(w, r, http.StatusInternalServerError)
	}
	if n.kind == kindExtended {
		return class, s.write(w, r, http.StatusOK, docs.extended)
	}
	return class, s.write(w, r, http.StatusOK, docs.legacy)
}

// write sends resp with an exact Content-Length, so net/http never
// chunks (EC2 never does), HEAD included.
func (s *Server) write(w http.ResponseWriter, r *http.Request, status int, resp response) int {
	h := w.Header()
	h.Set("Content-Type", resp.ctype)
	h.Set("Content-Length", resp.length)
	h.Set("Accept-Ranges", "none")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(resp.body) // a client gone away is not our error
	}
	return status
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int) int {
	w.Header().Del(hTokenTTL)
	return s.write(w, r, status, errorPage(status))
}

// issueToken answers PUT /latest/api/token.
func (s *Server) issueToken(w http.ResponseWriter, r *http.Request) int {
	v := r.Header.Values(hTokenTTL)
	if len(v) != 1 {
		return s.fail(w, r, http.StatusBadRequest)
	}
	ttl, ok := parseTokenTTL(v[0])
	if !ok {
		return s.fail(w, r, http.StatusBadRequest)
	}
	tok, err := s.key.issue(s.now().Add(time.Duration(ttl)*time.Second), s.callerBinding(r))
	if err != nil {
		s.log.Error("issuing token", "err", err)
		return s.fail(w, r, http.StatusInternalServerError)
	}
	s.obs.TokenIssued()
	w.Header().Set(hTokenTTL, strconv.Itoa(ttl))
	return s.write(w, r, http.StatusOK, newResponse([]byte(tok), hdrTextPlain))
}

// callerBinding is the binding tokens of r's caller are issued for.
func (s *Server) callerBinding(r *http.Request) string {
	if s.binding == nil {
		return ""
	}
	return s.binding(r)
}
