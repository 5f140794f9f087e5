// Command hoststate gives shell scripts the state comparison of the Go
// tests (pkg/internal/hoststate), so the e2e test, the stock-kernel suite
// and the demo compare the same facts in the same way:
//
//	hoststate snapshot [--netns] > FILE   the current network namespace, as JSON
//	hoststate diff BEFORE AFTER           what changed, one fact a line; exit 1 if anything did
//	hoststate show FILE|-                 one fact a line (take a fresh snapshot with "-")
//	hoststate has FILE|- SUBSTRING...     exit 0 if one fact contains every SUBSTRING
//
// Build it static (CGO_ENABLED=0) to run it inside a guest.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/imds-shim/imds-shim/pkg/internal/hoststate"
)

func main() {
	code, err := run(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "hoststate:", err)
	}
	os.Exit(code)
}

// errUsage is what a wrong command line gets.
var errUsage = errors.New("usage: hoststate snapshot [--netns] | diff BEFORE AFTER | show FILE|- | has FILE|- SUBSTRING…")

func run(args []string) (int, error) {
	if len(args) == 0 {
		return 2, errUsage
	}
	switch cmd, args := args[0], args[1:]; {
	case cmd == "snapshot" && (len(args) == 0 || len(args) == 1 && args[0] == "--netns"):
		s, err := hoststate.Take(hoststate.Options{NamedNetns: len(args) == 1})
		if err != nil {
			return 2, err
		}
		return 0, s.Write(os.Stdout)
	case cmd == "diff" && len(args) == 2:
		a, err := load(args[0])
		if err != nil {
			return 2, err
		}
		b, err := load(args[1])
		if err != nil {
			return 2, err
		}
		if d := a.Diff(b); d != "" {
			fmt.Print(d)
			return 1, nil
		}
		return 0, nil
	case cmd == "show" && len(args) == 1:
		s, err := load(args[0])
		if err != nil {
			return 2, err
		}
		for _, f := range s.Facts() {
			fmt.Println(f)
		}
		return 0, nil
	case cmd == "has" && len(args) >= 2:
		s, err := load(args[0])
		if err != nil {
			return 2, err
		}
		if s.Has(args[1:]...) {
			return 0, nil
		}
		return 1, nil
	}
	return 2, errUsage
}

// load reads a snapshot file, or takes a fresh snapshot for "-".
func load(name string) (*hoststate.Snapshot, error) {
	if name == "-" {
		return hoststate.Take(hoststate.Options{})
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s, err := hoststate.Read(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return s, nil
}
