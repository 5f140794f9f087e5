// Package nstest keeps root-only tests inside a private network namespace.
//
// A package whose tests touch the kernel's network state calls Main from its
// TestMain. When the test binary runs as root outside a private namespace,
// Main re-executes it under `unshare --net` with a marker in the environment
// that records the host's namespace; the tests then run against a throwaway
// namespace that disappears when the process exits, so they can never change
// the host's addresses or iptables rules. RequireRootNetns skips a test, saying
// why, unless that is where it runs.
package nstest

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// envHostNetns carries the inode of the namespace the test binary was started
// in, so the re-executed child can prove it is somewhere else.
const envHostNetns = "IMDS_SHIM_TEST_HOST_NETNS"

func currentNetns() string {
	s, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return ""
	}
	return s
}

// InPrivateNetns reports whether this process runs as root in a network
// namespace other than the one the test binary was started in.
func InPrivateNetns() bool {
	host := os.Getenv(envHostNetns)
	cur := currentNetns()
	return os.Geteuid() == 0 && host != "" && cur != "" && cur != host
}

// Main runs the tests of a package, first moving into a private network
// namespace when running as root. Without root, or without unshare(1), the
// tests run where they are and RequireRootNetns skips the root-only ones.
func Main(m *testing.M) {
	if os.Geteuid() == 0 && os.Getenv(envHostNetns) == "" {
		if unshare, err := exec.LookPath("unshare"); err == nil {
			os.Exit(reexec(unshare))
		}
	}
	if InPrivateNetns() {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "nstest: bringing lo up: %v: %s\n", err, out)
			os.Exit(2)
		}
	}
	os.Exit(m.Run())
}

func reexec(unshare string) int {
	args := append([]string{"--net", "--", os.Args[0]}, os.Args[1:]...)
	cmd := exec.Command(unshare, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envHostNetns+"="+currentNetns())
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintf(os.Stderr, "nstest: re-executing under unshare --net: %v\n", err)
		return 2
	}
	return 0
}

// RequireRootNetns skips t unless it runs as root inside the private network
// namespace that Main created.
func RequireRootNetns(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: run `sudo make test` to exercise the real kernel in a private network namespace")
	}
	if !InPrivateNetns() {
		t.Skip("not in a private network namespace (call nstest.Main from TestMain); refusing to touch the host's network")
	}
}
