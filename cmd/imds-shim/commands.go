package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

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
	if !c.RoleARN.IsZero() {
		fmt.Fprintf(stdout, "role:      %s\n", c.RoleARN)
	}
	for i, r := range c.Roles {
		fmt.Fprintf(stdout, "roles[%d]:  %s\n", i, r.RoleARN)
	}
	fmt.Fprintf(stdout, "listener:  %s (tokens %s, hop limit %d)\n", c.IMDS.Listen, c.IMDS.Tokens, c.IMDS.HopLimit)
	fmt.Fprintf(stdout, "           reachable by %s\n", c.Reach(c.IMDS.Listen))
	if l := c.Metrics.Listen; l.IsValid() {
		fmt.Fprintf(stdout, "metrics:   http://%s/metrics\n", l)
		fmt.Fprintf(stdout, "           reachable by %s\n", c.Reach(l))
	} else {
		fmt.Fprintf(stdout, "metrics:   off\n")
	}
	if c.ManageNetwork() {
		fmt.Fprintf(stdout, "network plan:\n%s", indent(networkConfig(c).Render()))
	} else {
		fmt.Fprintf(stdout, "network:   not managed; clients use AWS_EC2_METADATA_SERVICE_ENDPOINT=http://%s/\n", c.IMDS.Listen)
	}
	if *noSTS {
		return 0
	}
	if c.RoleARN.IsZero() {
		fmt.Fprintf(stdout, "sts:       skipped: no top-level role_arn to try\n")
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.StartTimeout.D())
	defer cancel()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r, err := newCredentials(ctx, c, log, newMetrics(version))
	if err == nil {
		err = r.Fetch(ctx)
	}
	if err != nil {
		fmt.Fprintf(stderr, "imds-shim check: STS: %v\n", err)
		return daemon.ExitCredentials
	}
	cur, _ := r.Current()
	fmt.Fprintf(stdout, "sts:       ok: assumed %s, credentials expire %s (in %s)\n",
		c.RoleARN.String(), cur.Expires.UTC().Format(time.RFC3339), time.Until(cur.Expires).Round(time.Second))
	return 0
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
	fmt.Fprintf(w, "role:        %s\n", st.RoleARN)
	fmt.Fprintf(w, "listener:    %s (tokens %s, hop limit %d)\n", st.Listen, st.Tokens, st.HopLimit)
	if st.CredentialsError != "" {
		fmt.Fprintf(w, "credentials: NONE: %s\n", st.CredentialsError)
	} else {
		fmt.Fprintf(w, "credentials: ok, expire %s\n", st.CredentialsExpire)
	}
	if b, err := json.Marshal(st.Credentials); err == nil {
		var cs credentials.State
		if json.Unmarshal(b, &cs) == nil {
			fmt.Fprintf(w, "refresh:     last %s, next %s, attempts %d, failures %d\n",
				fmtTime(cs.LastRefresh), fmtTime(cs.NextRefresh), cs.Attempts, cs.Failures)
			if cs.LastError != "" {
				fmt.Fprintf(w, "last error:  %s (%s) at %s\n", cs.LastError, cs.LastErrorClass, fmtTime(cs.LastErrorAt))
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

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
