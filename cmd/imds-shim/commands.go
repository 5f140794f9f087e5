package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/imds-shim/imds-shim/pkg/callers"
	"github.com/imds-shim/imds-shim/pkg/config"
	"github.com/imds-shim/imds-shim/pkg/credentials"
	"github.com/imds-shim/imds-shim/pkg/daemon"
	"github.com/imds-shim/imds-shim/pkg/netredirect"
)

// cmdCheck validates the configuration, prints what serve would install and
// makes one trial STS call.
func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", "check [-c FILE] [--no-sts]", stderr)
	cfgPath := fs.String("c", config.DefaultPath, "configuration `file`")
	fs.StringVar(cfgPath, "config", config.DefaultPath, "configuration `file` (same as -c)")
	noSTS := fs.Bool("no-sts", false, "skip the trial STS call")
	if code, ok := parse(fs, args, stdout); !ok {
		return code
	}
	c, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "imds-shim check: %v\n", err)
		return daemon.ExitConfig
	}
	fmt.Fprintf(stdout, "config:    %s: ok\n", *cfgPath)
	for _, w := range c.Warnings() {
		fmt.Fprintf(stdout, "warning:   %s: %s\n", w.Key, w.Msg)
	}
	for _, w := range c.FileWarnings(*cfgPath) {
		fmt.Fprintf(stdout, "warning:   %s\n", w)
	}
	printCallers(stdout, c)
	fmt.Fprintf(stdout, "listener:  %s (tokens %s, hop limit %d)\n", c.IMDS.Listen, c.IMDS.Tokens, c.IMDS.HopLimit)
	fmt.Fprintf(stdout, "           reachable by %s\n", c.Reach(c.IMDS.Listen))
	if c.ManageNetwork() && c.Network.IPv6 != netredirect.IPv6False {
		when := "network.ipv6: auto, only where this host has IPv6"
		if c.Network.IPv6 == netredirect.IPv6True {
			when = "network.ipv6: true"
		}
		v6 := netredirect.IPv6Target(c.IMDS.Listen)
		fmt.Fprintf(stdout, "listener:  %s (%s)\n", v6, when)
		fmt.Fprintf(stdout, "           reachable by %s\n", c.Reach(v6))
	}
	if l := c.Metrics.Listen; l.IsValid() {
		fmt.Fprintf(stdout, "metrics:   http://%s/metrics\n", l)
		fmt.Fprintf(stdout, "           reachable by %s\n", c.Reach(l))
		if l.Port() >= 1024 {
			fmt.Fprintf(stdout, "           port %d: any local user may bind it first; the daemon then serves credentials without metrics until it is free\n", l.Port())
		}
	} else {
		fmt.Fprintf(stdout, "metrics:   off\n")
	}
	if c.ManageNetwork() {
		fmt.Fprintf(stdout, "network plan:\n%s", indent(networkConfig(c).Render()))
	} else {
		fmt.Fprintf(stdout, "network:   not managed; clients use AWS_EC2_METADATA_SERVICE_ENDPOINT=http://%s/\n", c.IMDS.Listen)
	}
	if code := checkRolesAnywhere(stdout, stderr, c); code != 0 {
		return code
	}
	if *noSTS {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.StartTimeout.D())
	defer cancel()
	set, err := newCredentials(ctx, c, slog.New(slog.DiscardHandler), newMetrics(version), nil)
	if err != nil {
		fmt.Fprintf(stderr, "imds-shim check: STS: %v\n", err)
		return daemon.ExitCredentials
	}
	_ = set.Fetch(ctx) // each role's result is in the snapshot
	code := 0
	for _, r := range set.Snapshot().Roles {
		switch {
		case r.PerCaller:
			fmt.Fprintf(stdout, "sts:       %s (%s): not tried: one session per caller, made on its first request\n", r.RoleARN, strings.Join(r.Entries, ", "))
		case r.State != nil && r.State.Serving:
			fmt.Fprintf(stdout, "sts:       ok: assumed %s (%s), credentials expire %s (in %s)\n", r.RoleARN, strings.Join(r.Entries, ", "),
				r.State.Expires.UTC().Format(time.RFC3339), time.Until(r.State.Expires).Round(time.Second))
		default:
			msg := "no credentials"
			if r.State != nil && r.State.LastError != "" {
				msg = r.State.LastError
			}
			fmt.Fprintf(stderr, "imds-shim check: STS: %s (%s): %s\n", r.RoleARN, strings.Join(r.Entries, ", "), msg)
			code = daemon.ExitCredentials
		}
	}
	return code
}

// printCallers prints the caller table: which caller gets which role, and
// what this host's cgroup layout and kernel let imds-shim tell apart.
func printCallers(w io.Writer, c *config.Config) {
	if !c.RoleARN.IsZero() {
		fmt.Fprintf(w, "role:      %s\n", c.RoleARN)
	}
	if len(c.Roles) == 0 {
		fmt.Fprintf(w, "callers:   every caller gets role_arn (no roles entries)\n")
		return
	}
	fmt.Fprintf(w, "callers:   first matching entry wins:\n")
	for i, r := range c.Roles {
		var m []string
		add := func(k string, v []string) {
			if len(v) > 0 {
				m = append(m, k+"="+strings.Join(v, ","))
			}
		}
		add("units", r.Units)
		add("users", r.Users)
		add("groups", r.Groups)
		var src []string
		for _, p := range r.Sources {
			src = append(src, p.String())
		}
		add("sources", src)
		extra := ""
		if r.CallerSourceIdentity {
			extra = fmt.Sprintf(" (a session per caller, sts:SourceIdentity = its name, at most %d)", r.MaxCallerSessions)
		}
		fmt.Fprintf(w, "  roles[%d]: %s <- %s%s\n", i, r.RoleARN.Name, strings.Join(m, " "), extra)
	}
	if c.RoleARN.IsZero() {
		fmt.Fprintf(w, "  default:  no role (callers matching no entry get 404)\n")
	} else {
		fmt.Fprintf(w, "  default:  %s (host callers matching no entry; containers only through sources or this)\n", c.RoleARN.Name)
	}
	if c.Unidentified == "default" {
		fmt.Fprintf(w, "  unidentified: the default role (unidentified: default)\n")
	} else {
		fmt.Fprintf(w, "  unidentified: no role\n")
	}
	l := callers.DetectLayout()
	fmt.Fprintf(w, "cgroups:   %s\n", l.Describe())
	id := callers.NewIdentifier()
	defer id.Close()
	if me, err := id.SelfTest(); err != nil {
		fmt.Fprintf(w, "warning:   caller identification self-test: %v\n", err)
	} else {
		fmt.Fprintf(w, "identify:  ok (this process is seen as %s)\n", me)
	}
	if pol, err := callerPolicy(c); err == nil {
		if !l.Units() && pol.UsesUnits() {
			fmt.Fprintf(w, "warning:   roles: units entries match nothing on a cgroup v1 host\n")
		}
		for _, u := range pol.Unresolved() {
			fmt.Fprintf(w, "warning:   %s\n", u)
		}
	} else {
		fmt.Fprintf(w, "warning:   roles: %v\n", err)
	}
}

// indent prefixes every line of s with two spaces.
func indent(s string) string {
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n  ") + "\n"
}

// cmdCleanup removes the address, link and rules of any earlier run, found
// by ownership. It is what the unit's ExecStopPost runs.
func cmdCleanup(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("cleanup", "cleanup", stderr)
	if code, ok := parse(fs, args, stdout); !ok {
		return code
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if err := netredirect.Cleanup(context.Background(), log); err != nil {
		fmt.Fprintf(stderr, "imds-shim cleanup: %v\n", err)
		return daemon.ExitFailure
	}
	return 0
}

// cmdStatus prints what the running daemon reports on its control socket.
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", "status [--json]", stderr)
	asJSON := fs.Bool("json", false, "print the raw JSON")
	sock := fs.String("socket", filepath.Join(runtimeDir(), "control.sock"), "control socket `path`")
	if code, ok := parse(fs, args, stdout); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, raw, err := daemon.ReadStatus(ctx, *sock)
	if err != nil {
		fmt.Fprintf(stderr, "imds-shim status: %v\n", err)
		return daemon.ExitFailure
	}
	if *asJSON {
		stdout.Write(raw)
		fmt.Fprintln(stdout)
		return 0
	}
	printStatus(stdout, st)
	return 0
}

func printStatus(w io.Writer, st *daemon.Status) {
	fmt.Fprintf(w, "imds-shim %s, pid %d, up since %s\n", st.Version, st.PID, st.Started.Format(time.RFC3339))
	fmt.Fprintf(w, "config:      %s (reloads: %d)\n", st.Config, st.Reloads)
	if st.LastReloadError != "" {
		fmt.Fprintf(w, "last reload: REJECTED: %s\n", st.LastReloadError)
	}
	if st.RoleARN != "" {
		fmt.Fprintf(w, "role:        %s\n", st.RoleARN)
	}
	ls := st.Listen
	if len(st.Listeners) > 0 {
		ls = strings.Join(st.Listeners, ", ")
	}
	fmt.Fprintf(w, "listener:    %s (tokens %s, hop limit %d)\n", ls, st.Tokens, st.HopLimit)
	switch {
	case st.MetricsError != "":
		fmt.Fprintf(w, "metrics:     NOT LISTENING on %s: %s (tried again until free)\n", st.Metrics, st.MetricsError)
	case st.Metrics != "":
		fmt.Fprintf(w, "metrics:     http://%s/metrics\n", st.Metrics)
	}
	if st.CredentialsError != "" {
		fmt.Fprintf(w, "credentials: NONE: %s\n", st.CredentialsError)
	} else {
		fmt.Fprintf(w, "credentials: ok, expire %s\n", st.CredentialsExpire)
	}
	if b, err := json.Marshal(st.Credentials); err == nil {
		var ss credentials.SetStatus
		if json.Unmarshal(b, &ss) == nil {
			for _, r := range ss.Roles {
				printRole(w, r)
			}
		}
	}
	if !st.ManageNetwork {
		fmt.Fprintln(w, "network:     not managed")
		return
	}
	if st.NetworkError != "" {
		fmt.Fprintf(w, "network:     ERROR: %s\n", st.NetworkError)
	}
	if b, err := json.Marshal(st.Network); err == nil {
		var ns netredirect.Status
		if json.Unmarshal(b, &ns) == nil {
			fmt.Fprintf(w, "network:\n%s", indent(ns.String()))
		}
	}
}

// printRole prints one credential set of `imds-shim status`.
func printRole(w io.Writer, r credentials.RoleStatus) {
	fmt.Fprintf(w, "role %s (%s): %d callers served\n", r.Role, strings.Join(r.Entries, ", "), r.Callers)
	states := map[string]credentials.State{}
	if r.State != nil {
		states[""] = *r.State
	} else {
		fmt.Fprintf(w, "  sessions:  %d of at most %d (one per caller)\n", r.Sessions, r.MaxSessions)
		states = r.Session
	}
	for _, caller := range slices.Sorted(maps.Keys(states)) {
		cs := states[caller]
		who := ""
		if caller != "" {
			who = "  caller " + caller + ":"
		}
		if cs.Serving {
			fmt.Fprintf(w, "  %s ok, expires %s; refresh: last %s, next %s, attempts %d, failures %d\n", who,
				fmtTime(cs.Expires), fmtTime(cs.LastRefresh), fmtTime(cs.NextRefresh), cs.Attempts, cs.Failures)
		} else {
			fmt.Fprintf(w, "  %s FAILING: no credentials; next attempt %s, attempts %d, failures %d\n", who,
				fmtTime(cs.NextRefresh), cs.Attempts, cs.Failures)
		}
		if cs.LastError != "" {
			fmt.Fprintf(w, "  %s last error: %s (%s) at %s\n", who, cs.LastError, cs.LastErrorClass, fmtTime(cs.LastErrorAt))
		}
	}
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
