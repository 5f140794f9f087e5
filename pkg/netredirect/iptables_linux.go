package netredirect

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// iptablesAPI is the part of iptables that the package uses: the methods of
// *iptables.IPTables it calls plus a whole-table listing and a side-effect
// free probe for a table's existence. Tests substitute an in-memory fake.
type iptablesAPI interface {
	NewChain(table, chain string) error
	ClearAndDeleteChain(table, chain string) error
	Append(table, chain string, rulespec ...string) error
	Insert(table, chain string, pos int, rulespec ...string) error
	Delete(table, chain string, rulespec ...string) error
	DeleteById(table, chain string, id int) error
	// ListTable returns `iptables -t table -S`: policies, user chains, rules.
	ListTable(table string) ([]string, error)
	// TablePresent reports whether listing table can be done without
	// creating it; false means there is nothing of ours in it either.
	TablePresent(table string) (bool, error)
}

// iptablesCmd adapts go-iptables to iptablesAPI for one backend binary.
type iptablesCmd struct {
	*iptables.IPTables
	path   string
	legacy bool
	v6     bool
}

var _ iptablesAPI = iptablesCmd{}

// waitSeconds bounds how long a command waits for the xtables lock, so a
// stuck iptables elsewhere cannot hang Setup or Teardown forever.
const waitSeconds = 5

// ListTable runs `iptables -t table -S`.
func (c iptablesCmd) ListTable(table string) ([]string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(c.path, "-t", table, "-S", "--wait", fmt.Sprint(waitSeconds))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("listing table %s with %s: %w: %s", table, c.path, err, strings.TrimSpace(stderr.String()))
	}
	return strings.Split(strings.TrimRight(stdout.String(), "\n"), "\n"), nil
}

// Restore feeds input to this binary's restore command (iptables-nft-
// restore, ip6tables-legacy-restore, …) with --noflush.
func (c iptablesCmd) Restore(input string) error {
	args := []string{"--noflush"}
	if c.legacy {
		args = append(args, "--wait", fmt.Sprint(waitSeconds))
	}
	var stderr bytes.Buffer
	cmd := exec.Command(c.path+"-restore", args...)
	cmd.Stdin, cmd.Stderr = strings.NewReader(input), &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s-restore: %w: %s", c.path, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

var _ restorer = iptablesCmd{}

// TablePresent is always true for nft, whose listing creates nothing. The
// kernel instantiates a legacy table the first time anything asks for it, so
// for legacy only the tables in /proc/net/ip_tables_names (this namespace's)
// are present.
func (c iptablesCmd) TablePresent(table string) (bool, error) {
	if !c.legacy {
		return true, nil
	}
	names := "/proc/net/ip_tables_names"
	if c.v6 {
		names = "/proc/net/ip6_tables_names"
	}
	b, err := os.ReadFile(names)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading legacy table names: %w", err)
	}
	for _, n := range strings.Fields(string(b)) {
		if n == table {
			return true, nil
		}
	}
	return false, nil
}

// errNoBackend says that a backend's binary is not installed.
var errNoBackend = errors.New("iptables backend not installed")

// openIPTables returns the iptables (ip6tables with v6) of backend ("nft"
// or "legacy"), using iptables-nft or iptables-legacy, or plain iptables
// when it is the only binary and runs in that mode (iptables before 1.8 is
// legacy).
func openIPTables(backend string, v6 bool) (iptablesAPI, error) {
	cmd, proto := "iptables", iptables.ProtocolIPv4
	if v6 {
		cmd, proto = "ip6tables", iptables.ProtocolIPv6
	}
	path, err := exec.LookPath(cmd + "-" + backend)
	if err != nil {
		mode, merr := iptablesMode()
		if merr != nil || mode != backend {
			return nil, fmt.Errorf("finding %s-%s: %w", cmd, backend, errNoBackend)
		}
		if path, err = exec.LookPath(cmd); err != nil {
			return nil, fmt.Errorf("finding %s: %w", cmd, errNoBackend)
		}
	}
	ipt, err := iptables.New(iptables.IPFamily(proto), iptables.Path(path), iptables.Timeout(waitSeconds))
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return iptablesCmd{IPTables: ipt, path: path, legacy: backend == BackendLegacy, v6: v6}, nil
}

// ipv6Usable says why IPv6 cannot carry the endpoint on link, or nil: the
// kernel has no IPv6, or it is disabled for all links or for this one.
// These are this network namespace's settings (/proc/sys/net follows the
// reader's namespace).
func ipv6Usable(link string) error {
	for _, name := range []string{"all", link} {
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6")
		switch {
		case errors.Is(err, os.ErrNotExist) && name == "all":
			return errors.New("the kernel has no IPv6 (no /proc/sys/net/ipv6)")
		case errors.Is(err, os.ErrNotExist):
			continue // the link does not exist yet; "all" decided
		case err != nil:
			return fmt.Errorf("reading the IPv6 setting of %s: %w", name, err)
		case strings.TrimSpace(string(b)) != "0":
			return fmt.Errorf("IPv6 is disabled (net.ipv6.conf.%s.disable_ipv6=%s)", name, strings.TrimSpace(string(b)))
		}
	}
	return nil
}

// iptablesMode returns the backend that plain `iptables` (the distribution's
// alternative) uses, from the "(nf_tables)" or "(legacy)" of `iptables -V`.
// iptables older than 1.8 prints neither and is legacy.
func iptablesMode() (string, error) {
	out, err := exec.Command("iptables", "-V").Output()
	if err != nil {
		return "", fmt.Errorf("running iptables -V: %w", err)
	}
	return parseIPTablesVersion(string(out)), nil
}

// parseIPTablesVersion maps `iptables -V` output to a backend.
func parseIPTablesVersion(out string) string {
	switch {
	case strings.Contains(out, "(nf_tables)"):
		return BackendNFT
	case strings.Contains(out, "(legacy)"):
		return BackendLegacy
	case strings.HasPrefix(out, "iptables v1."):
		return BackendLegacy
	}
	return ""
}

// isNotExist reports whether err says a chain or rule is already gone.
// *iptables.Error has the method, and so do the fakes' errors.
func isNotExist(err error) bool {
	var e interface{ IsNotExist() bool }
	return errors.As(err, &e) && e.IsNotExist()
}
