// Package netredirect makes 169.254.169.254 answer on this host: it puts the
// address on a link as a /32 and redirects tcp to it (port 80 by default) to
// the daemon's own listener with an iptables DNAT, then keeps both in place
// until it is told to remove them.
//
// # What is installed
//
// The address goes, as 169.254.169.254/32 with scope host and the label
// "<link>:imds", on a dummy link named imds0 that imds-shim creates and marks
// with the alias "imds-shim"; where the kernel has no dummy driver it goes on
// lo instead (Config.Link "auto"), or on a link the operator names. The rules
// live in two chains that imds-shim owns, each reached by one jump inserted
// first in a built-in chain:
//
//	nat    OUTPUT  -> IMDS-SHIM-OUTPUT   DNAT tcp to Addr:Port -> Target
//	filter FORWARD -> IMDS-SHIM-FORWARD  ACCEPT tcp to Addr:Port
//
// Every rule carries `-m comment --comment imds-shim`, so `iptables-save`
// shows whose rules they are. Plan and Config.Render describe exactly this
// without touching the host.
//
// route_localnet is never changed: a DNAT in nat OUTPUT of locally generated
// traffic to 127.0.0.1 works with route_localnet=0 (the packet never arrives
// on a non-loopback interface). It would only be needed to DNAT traffic that
// arrives from another host or a container (nat PREROUTING) to 127.0.0.0/8,
// which this package does not do; such setups should let the daemon listen on
// the link-local address itself (Target 169.254.169.254:<port>) instead.
//
// # Ownership
//
// Nothing is remembered across runs. What belongs to imds-shim is recognised
// on the host: chains whose names start with "IMDS-SHIM-" and every rule that
// jumps to one of them; IPv4 addresses whose label is "<link>:imds"; dummy
// links whose alias is "imds-shim". An address the administrator added without
// that label (even 169.254.169.254 itself) is never removed, and neither is
// any other rule. Teardown removes what the Redirector's configuration owns;
// Cleanup removes every leftover of any earlier run, in both iptables
// backends, because a leftover in the backend the host no longer uses still
// rewrites packets.
//
// # Backends
//
// iptables-nft and iptables-legacy program different kernel tables that are
// both active at once, so rules must go where the host's other software puts
// theirs and never into both. With Config.Backend "auto" the backend holding
// more rules and user chains (other than ours) in the nat, filter and mangle
// tables wins, much as the Kubernetes iptables wrappers decide (kubelet's
// empty KUBE-IPTABLES-HINT chain in mangle counts); on a tie (typically an empty
// host) the mode of the `iptables` alternative (`iptables -V` says
// "(nf_tables)" or "(legacy)") decides, and nft when that is unknown. Legacy
// tables are only inspected when /proc/net/ip_tables_names lists them, because
// merely listing a legacy table makes the kernel instantiate it.
//
// # Self-healing and restarts
//
// Run repairs what others remove (firewalld reloads, `iptables -F`,
// systemd-networkd dropping foreign addresses): it reacts to address removals
// through a netlink subscription and re-checks everything every
// Config.ReconcileInterval, converging the owned chains to exactly the planned
// rules and the link to exactly the planned address (a labelled address left
// from an earlier Addr is removed). Each repair is logged and reported to the Observer. Setup does not
// fight other programs over rule order: the jump is inserted first, but a rule
// that kube-proxy or Docker later inserts in front of it is left alone.
//
// The redirect fails open across restarts. Between a stop (Teardown, or the
// unit's ExecStopPost cleanup) and the next Setup the address is not local,
// so requests to it follow the host's routes: usually towards the default
// gateway, where they time out (SDKs then fall through to their next
// credential source or retry), or "network unreachable" without a route.
// After a crash that nothing cleaned up, address and rules stay and point at
// a closed port: connection refused until the next start's Cleanup and Setup.
// Credentials are never served by anything else meanwhile, but on a network
// where another host answers 169.254.169.254 clients would reach it; a host
// that must prevent that should add its own REJECT rule for the address.
package netredirect
