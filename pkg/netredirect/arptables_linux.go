package netredirect

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// arptablesCmd drives arptables (arptables-nft or arptables-legacy) through
// the same interface as iptables. go-iptables cannot: it always passes
// --wait, which arptables does not know. arptables has no comment match, so
// our ARP rule is recognised by its chain's name alone.
//
// Why ARP at all: Linux answers ARP for any local address on every link
// (arp_ignore=0, the default), whatever the address's scope, so without
// this an on-link neighbour resolving 169.254.169.254 gets this host's MAC
// (measured: REACHABLE). The INPUT fence drops what it then sends, but the
// answer itself would pull the neighbour's own metadata traffic to this
// host, where it dies. arp_ignore is the host's setting and not ours to
// change; a rule in our own arptables chain is.
type arptablesCmd struct {
	path   string
	legacy bool
}

var _ iptablesAPI = arptablesCmd{}

// arpError is a failed arptables command; like *iptables.Error it says
// whether a chain or rule did not exist.
type arpError struct {
	args   []string
	err    error
	stderr string
}

func (e *arpError) Error() string {
	return fmt.Sprintf("running arptables %s: %v: %s", strings.Join(e.args, " "), e.err, strings.TrimSpace(e.stderr))
}

func (e *arpError) IsNotExist() bool {
	return strings.Contains(e.stderr, "No chain/target/match by that name") ||
		strings.Contains(e.stderr, "does a matching rule exist")
}

func (c arptablesCmd) run(args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(c.path, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", &arpError{args: args, err: err, stderr: stderr.String()}
	}
	return stdout.String(), nil
}

func (c arptablesCmd) NewChain(table, chain string) error {
	_, err := c.run("-t", table, "-N", chain)
	return err
}

func (c arptablesCmd) ClearAndDeleteChain(table, chain string) error {
	if _, err := c.run("-t", table, "-F", chain); err != nil {
		if isNotExist(err) {
			return nil
		}
		return err
	}
	_, err := c.run("-t", table, "-X", chain)
	return err
}

func (c arptablesCmd) Append(table, chain string, spec ...string) error {
	_, err := c.run(append([]string{"-t", table, "-A", chain}, spec...)...)
	return err
}

func (c arptablesCmd) Insert(table, chain string, pos int, spec ...string) error {
	_, err := c.run(append([]string{"-t", table, "-I", chain, strconv.Itoa(pos)}, spec...)...)
	return err
}

func (c arptablesCmd) Delete(table, chain string, spec ...string) error {
	_, err := c.run(append([]string{"-t", table, "-D", chain}, spec...)...)
	return err
}

func (c arptablesCmd) DeleteById(table, chain string, id int) error {
	_, err := c.run("-t", table, "-D", chain, strconv.Itoa(id))
	return err
}

func (c arptablesCmd) ListTable(table string) ([]string, error) {
	out, err := c.run("-t", table, "-S")
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimRight(out, "\n"), "\n"), nil
}

// TablePresent: as for iptables, listing a legacy table creates it.
func (c arptablesCmd) TablePresent(table string) (bool, error) {
	if !c.legacy {
		return true, nil
	}
	b, err := os.ReadFile("/proc/net/arp_tables_names")
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading legacy arp table names: %w", err)
	}
	for _, n := range strings.Fields(string(b)) {
		if n == table {
			return true, nil
		}
	}
	return false, nil
}

// openARPTables returns arptables-<backend>, or plain arptables when it
// runs in that mode.
func openARPTables(backend string) (iptablesAPI, error) {
	path, err := exec.LookPath("arptables-" + backend)
	if err != nil {
		p, perr := exec.LookPath("arptables")
		if perr != nil {
			return nil, fmt.Errorf("finding arptables-%s: %w", backend, errNoBackend)
		}
		out, _ := exec.Command(p, "-V").Output()
		mode := BackendLegacy
		if strings.Contains(string(out), "nf_tables") {
			mode = BackendNFT
		}
		if mode != backend {
			return nil, fmt.Errorf("finding arptables-%s: %w", backend, errNoBackend)
		}
		path = p
	}
	return arptablesCmd{path: path, legacy: backend == BackendLegacy}, nil
}
