package callers

import (
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
)

// Kind says how far a caller was identified.
type Kind uint8

const (
	// Unidentified: the kernel could not vouch for the caller (its socket is
	// gone, or answered as a closed stub; its cgroup could not be resolved; an
	// error). It gets no role unless the policy says `unidentified: default`.
	Unidentified Kind = iota
	// Host: a process on this host, in this network namespace, identified by
	// the uid and cgroup of its socket.
	Host
	// Source: a caller from another network namespace (a container behind a
	// bridge), known only by its source address. It never matches a host
	// user's or unit's entry.
	Source
)

func (k Kind) String() string {
	switch k {
	case Host:
		return "host"
	case Source:
		return "source"
	default:
		return "unidentified"
	}
}

// Caller is who is at the other end of one accepted connection.
type Caller struct {
	Kind Kind
	// Reason says why a caller is Unidentified ("socket closed", …); it is
	// for logs and never part of the identity.
	Reason string

	// Source is the peer address as the listener sees it (unmapped). For a
	// host caller it is its own socket's address (169.254.169.254 after the
	// DNAT); for a Source caller it is the only identity there is.
	Source netip.AddrPort

	// The rest is set for Host callers only.

	UID uint32
	// User is the name of UID in /etc/passwd, "" when it has none (a
	// DynamicUser= service): such a caller matches only numeric uids and
	// units.
	User string
	// GID is UID's primary group from /etc/passwd, valid when HasGID;
	// Group is its name in /etc/group, "" when it has none.
	GID    uint32
	HasGID bool
	Group  string

	CgroupID uint64
	// Cgroup is the caller's path in the unified hierarchy ("/system.slice/
	// backup.service"); "" on a cgroup v1 host, where only the uid tells
	// callers apart.
	Cgroup string
	// Unit is the systemd unit the caller runs in and Slices the slices
	// above it, outermost first (see UnitOf); both empty outside a unit.
	Unit   string
	Slices []string

	// Inode and Cookie name the caller's socket (as `ss -e` shows them).
	Inode  uint32
	Cookie uint64
}

// Key is the caller's identity as a stable string, for binding IMDSv2 tokens
// and keeping one session per caller: "uid:1001", "uid:0 unit:backup.service",
// "src:172.17.0.5" or "unidentified". Two connections of one process have the
// same key; a different uid, a different unit or a different container does
// not. The source port is not part of it.
func (c Caller) Key() string {
	switch c.Kind {
	case Host:
		k := "uid:" + strconv.FormatUint(uint64(c.UID), 10)
		if c.Unit != "" {
			k += " unit:" + c.Unit
		}
		return k
	case Source:
		return "src:" + c.Source.Addr().String()
	default:
		return "unidentified"
	}
}

// Name is the most readable name of a caller: the unit, else the user name,
// else "uid-N"; the source address for containers. It is made to fit
// sts:SourceIdentity (2 to 64 characters of [A-Za-z0-9_+=,.@-]): other
// characters become '-', and it is cut at 64.
func (c Caller) Name() string {
	var n string
	switch c.Kind {
	case Host:
		switch {
		case c.Unit != "":
			n = c.Unit
		case c.User != "":
			n = c.User
		default:
			n = "uid-" + strconv.FormatUint(uint64(c.UID), 10)
		}
	case Source:
		n = c.Source.Addr().String()
	default:
		n = "unidentified"
	}
	b := []byte(n)
	for i, r := range b {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.IndexByte("_+=,.@-", r) >= 0) {
			b[i] = '-'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	if len(b) < 2 {
		b = append(b, '-')
	}
	return string(b)
}

// String is the audit form: "uid=1001 user=alice group=alice unit=backup.service
// cgroup=/system.slice/backup.service", "src=172.17.0.5" or
// "unidentified reason=…", always with the peer address.
func (c Caller) String() string {
	var b strings.Builder
	switch c.Kind {
	case Host:
		b.WriteString("uid=")
		b.WriteString(strconv.FormatUint(uint64(c.UID), 10))
		if c.User != "" {
			b.WriteString(" user=" + quoteIfNeeded(c.User))
		}
		if c.Unit != "" {
			b.WriteString(" unit=" + quoteIfNeeded(c.Unit))
		}
		if c.Cgroup != "" {
			b.WriteString(" cgroup=" + quoteIfNeeded(c.Cgroup))
		}
	case Source:
		b.WriteString("src=" + c.Source.Addr().String())
		return b.String()
	default:
		b.WriteString("unidentified reason=" + quoteIfNeeded(c.Reason))
	}
	if c.Source.IsValid() {
		b.WriteString(" peer=" + c.Source.String())
	}
	return b.String()
}

// LogValue makes a Caller log as a group of attributes under slog.
func (c Caller) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("kind", c.Kind.String())}
	switch c.Kind {
	case Host:
		attrs = append(attrs, slog.Uint64("uid", uint64(c.UID)))
		if c.User != "" {
			attrs = append(attrs, slog.String("user", c.User))
		}
		if c.Unit != "" {
			attrs = append(attrs, slog.String("unit", c.Unit))
		}
		if c.Cgroup != "" {
			attrs = append(attrs, slog.String("cgroup", c.Cgroup))
		}
	case Unidentified:
		attrs = append(attrs, slog.String("reason", c.Reason))
	}
	if c.Source.IsValid() {
		attrs = append(attrs, slog.String("peer", c.Source.String()))
	}
	return slog.GroupValue(attrs...)
}

// quoteIfNeeded keeps a logfmt-like line parseable whatever a user or unit
// name holds.
func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == '"' || r == '=' || r > '~' }) {
		return strconv.Quote(s)
	}
	return s
}
