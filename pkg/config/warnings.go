package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
)

// Warnings lists settings that are valid but weaken the service; check
// prints them and serve logs them.
func (c *Config) Warnings() []Problem {
	var w []Problem
	if l := c.IMDS.Listen; l.IsValid() && l.Port() >= 1024 {
		msg := fmt.Sprintf("port %d is unprivileged: any local user could bind %s before imds-shim and answer its clients", l.Port(), l)
		if c.IMDS.AllowUnprivilegedPort {
			msg += " (allowed by imds.allow_unprivileged_port)"
		} else {
			msg += "; use a port below 1024, or set imds.allow_unprivileged_port: true (serve refuses it otherwise)"
		}
		w = append(w, Problem{"imds.listen", msg})
	}
	// The fence lets containers on these bridges connect; the handler
	// then answers only sources it allows. With no range to allow, every
	// container would get 403: the two must agree.
	if c.ManageNetwork() && len(c.Network.Containers) > 0 && len(c.IMDS.AllowedCIDRs) == 0 && !c.hasSources() {
		w = append(w, Problem{"imds.allowed_cidrs", fmt.Sprintf("is empty, so containers on %s can connect (network.containers) but are answered 403; "+
			"list their address ranges (e.g. 172.17.0.0/16 for docker0)", strings.Join(c.Network.Containers, ", "))})
	}
	if c.IMDS.AllowRemote {
		for _, l := range []struct {
			key string
			ap  netip.AddrPort
		}{{"imds.listen", c.IMDS.Listen}, {"metrics.listen", c.Metrics.Listen}} {
			if l.ap.IsValid() && !localOnly(l.ap.Addr()) {
				w = append(w, Problem{l.key, "reachable by " + c.Reach(l.ap) + " (imds.allow_remote)"})
			}
		}
	}
	if ra := c.RolesAnywhere; ra != nil && !ra.RoleARN.IsZero() {
		// CreateSession takes no session name (the profile may accept
		// one, which imds-shim does not send): AWS names the session
		// after the certificate's serial.
		const msg = "is not used for roles_anywhere.role_arn, which is served from CreateSession directly: AWS names that session after the certificate's serial number"
		if c.RoleARN == ra.RoleARN && c.SessionName != "" {
			w = append(w, Problem{"session_name", msg})
		}
		for i, r := range c.Roles {
			if r.RoleARN == ra.RoleARN && r.SessionName != "" && r.SessionName != c.SessionName {
				w = append(w, Problem{fmt.Sprintf("roles[%d].session_name", i), msg})
			}
		}
	}
	return w
}

// ServedSources are the client source ranges the metadata API answers
// besides loopback and the endpoint addresses: imds.allowed_cidrs and every
// roles[].sources range, each once. A range given to a role is a range the
// operator means to serve; requiring it twice would answer 403 to the very
// containers the entry names.
func (c *Config) ServedSources() []netip.Prefix {
	out := slices.Clone(c.IMDS.AllowedCIDRs)
	for _, r := range c.Roles {
		for _, p := range r.Sources {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

func (c *Config) hasSources() bool {
	for _, r := range c.Roles {
		if len(r.Sources) > 0 {
			return true
		}
	}
	return false
}

// Reach says who can connect to a listener on ap.
func (c *Config) Reach(ap netip.AddrPort) string {
	a := ap.Addr().Unmap()
	switch {
	case a.IsLoopback():
		return "processes on this host only (loopback)"
	case localOnly(a):
		who := "processes on this host"
		if len(c.Network.Containers) > 0 {
			who += " and containers on " + strings.Join(c.Network.Containers, ", ")
		}
		return who + "; nothing off the host (the address has scope host and imds-shim's rules fence it)"
	case a.IsUnspecified():
		return "any host that can route to this one, on every interface"
	default:
		return "any host that can route to " + a.String()
	}
}

// SecretFiles are the files that hold source credentials or say how to
// get them, by key: the config file itself is checked by FileWarnings too.
func (c *Config) SecretFiles() []Problem {
	files := []Problem{
		{"credentials_file", c.CredentialsFile},
		{"config_file", c.ConfigFile},
		{"web_identity_token_file", c.WebIdentityTokenFile},
	}
	if c.RolesAnywhere != nil {
		files = append(files, Problem{"roles_anywhere.private_key", c.RolesAnywhere.PrivateKey})
	}
	return files
}

// FileWarnings names every file among the configuration file at cfgPath and
// the source-credential files that other users can read or write, or that
// is not owned by root. Files that do not exist are left to other checks.
func (c *Config) FileWarnings(cfgPath string) []string {
	var out []string
	for _, f := range append([]Problem{{"config file", cfgPath}}, c.SecretFiles()...) {
		if f.Msg == "" {
			continue
		}
		if w := fileWarning(f.Msg); w != "" {
			out = append(out, fmt.Sprintf("%s %s: %s", f.Key, f.Msg, w))
		}
	}
	return out
}

// fileWarning describes what is wrong with the mode or owner of path.
func fileWarning(path string) string {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) || err != nil {
		return ""
	}
	var probs []string
	mode := st.Mode().Perm()
	if mode&0o044 != 0 {
		probs = append(probs, "readable by other users")
	}
	if mode&0o022 != 0 {
		probs = append(probs, "writable by other users")
	}
	if s, ok := st.Sys().(*syscall.Stat_t); ok && s.Uid != 0 {
		probs = append(probs, fmt.Sprintf("owned by uid %d, not root", s.Uid))
	}
	if len(probs) == 0 {
		return ""
	}
	return fmt.Sprintf("mode %04o, %s; run chown root: and chmod 600", mode, strings.Join(probs, ", "))
}
