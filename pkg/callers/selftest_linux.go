package callers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// ConnContext identifies c and stores the caller in ctx; it has the shape of
// http.Server.ConnContext, so each connection is identified once, when it is
// accepted, and its requests read the caller with FromContext.
func (id *Identifier) ConnContext(ctx context.Context, c net.Conn) context.Context {
	return NewContext(ctx, id.Identify(c))
}

// SelfTest identifies a connection this process makes to itself over
// loopback, to show (in `imds-shim check`, or at start) that this kernel and
// sandbox allow identification: sock_diag reachable, the cgroup id reported
// and resolvable. It returns the caller it saw, which must be this process.
func (id *Identifier) SelfTest() (Caller, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return Caller{}, fmt.Errorf("listening on loopback: %w", err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return Caller{}, fmt.Errorf("connecting over loopback: %w", err)
	}
	defer client.Close()
	conn, err := ln.Accept()
	if err != nil {
		return Caller{}, fmt.Errorf("accepting over loopback: %w", err)
	}
	defer conn.Close()
	c := id.Identify(conn)
	switch {
	case c.Kind != Host:
		return c, fmt.Errorf("identifying this process's own connection: %s", c.Reason)
	case c.UID != uint32(os.Geteuid()):
		return c, fmt.Errorf("identifying this process's own connection: uid %d, want %d", c.UID, os.Geteuid())
	case id.layout.Units() && c.CgroupID == rootCgroupID && selfCgroup() != "/":
		return c, errors.New("the kernel reports the root cgroup for every socket: callers can be told apart by uid only")
	}
	return c, nil
}

// selfCgroup is this process's path in the cgroup2 hierarchy, "" if none.
func selfCgroup() string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	for l := range strings.Lines(string(b)) {
		if p, ok := strings.CutPrefix(strings.TrimSpace(l), "0::"); ok {
			return p
		}
	}
	return ""
}
