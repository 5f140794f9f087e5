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
// lo instead (Config.Link "auto"), or on a link the operator names. With IPv6
// (Config.IPv6) fd00:ec2::254/128 goes on the same link with nodad (a dummy
// link would otherwise hold it "tentative", unbindable, for a while). The
// rules live in chains that imds-shim owns, each reached by one jump inserted
// first in a built-in chain; the same rules exist in ip6tables for
// fd00:ec2::254 when IPv6 is in use:
//
//	nat    OUTPUT     -> IMDS-SHIM-OUTPUT      DNAT tcp to Addr:Port -> Target (the host's processes)
//	nat    PREROUTING -> IMDS-SHIM-PREROUTING  the same with -i <bridge>, one rule per Config.Containers
//	filter INPUT      -> IMDS-SHIM-INPUT       the fence:
//	                                            RETURN what comes from lo
//	                                            ACCEPT tcp to Target from each configured bridge
//	                                            DROP everything else to Addr (any protocol, any port)
//	                                            DROP tcp to Target when it is another non-loopback address
//	arptables INPUT   -> IMDS-SHIM-ARP         DROP ARP requests for Addr
//
// Every iptables rule carries `-m comment --comment imds-shim`, so
// `iptables-save` shows whose rules they are (arptables has no comments; its
// chain name says it). Plan and Config.Render describe exactly this, with
// the listeners the daemon must bind (Config.Listeners, Redirector.Listeners),
// without touching the host.
//
// # Who can connect
//
// Only this host's processes (via lo) and, with Config.Containers, processes
// on those bridges. Nothing that is not on this host reaches the endpoint or
// the listener, on any port, over IPv4 or IPv6:
//
//   - Linux answers ARP for any local address on every link when arp_ignore is
//     0 (the default), whatever the address's scope; measured in this
//     package's kernel test, a neighbour's entry for 169.254.169.254 went
//     REACHABLE. That would pull a neighbour's own metadata requests to this
//     host. arp_ignore is the host's setting, so IMDS-SHIM-ARP drops the
//     requests instead. Local callers never ARP for a local address, and
//     containers reach it through their gateway. Without arptables installed
//     Setup warns and `status` says so; the fence below still holds.
//   - A neighbour that routes the address via this host, or sets a static
//     neighbour entry, delivers packets to a local address without ARP: the
//     INPUT fence drops them. IPv6 neighbour discovery answers only for
//     addresses on the receiving link, and the fence covers routed packets.
//   - The fence drops rather than rejects: an off-host sender learns nothing
//     (a RST or ICMP error would confirm that this host holds the address),
//     and no reply is generated for spoofed sources. The cost is that a
//     container on a bridge that is not configured waits for its client's
//     timeout (SDKs use about one second for IMDS) instead of being refused.
//   - Configured bridges get an ACCEPT for exactly the listener (after the
//     PREROUTING DNAT the packet is addressed to Target), so a host whose
//     INPUT policy is DROP (firewalld, ufw) still serves its containers;
//     everything else from lo is left to the host's own rules (RETURN).
//
// Hop limits do not keep containers out: a bridged container receives the
// host's replies directly, with no forwarding hop.
//
// route_localnet is never changed. A DNAT in nat OUTPUT of locally generated
// traffic to 127.0.0.1 works with route_localnet=0 (the packet never arrives
// on a non-loopback interface), but a DNAT in PREROUTING to 127.0.0.0/8 is
// dropped as a martian unless route_localnet=1, which would let neighbours
// reach every loopback service. So Containers require a non-loopback Target
// (Validate wraps ErrLoopbackTarget), normally 169.254.169.254:<port>, bound
// once Setup has put the address in place. IPv6 has no route_localnet at
// all, so the IPv6 DNAT always goes to [fd00:ec2::254]:<Target port>
// (IPv6Target) and the daemon listens there too.
//
// The filter FORWARD chain of earlier versions (ACCEPT tcp to Addr:Port) is
// gone: packets to a local address never traverse FORWARD, so it matched
// nothing while the address was in place, and between runs it let forwarded
// traffic to 169.254.169.254:80 bypass the host's FORWARD policy. Setup and
// Cleanup remove it where an older version left it.
//
// # IPv6
//
// Config.IPv6 "auto" (the default) answers at [fd00:ec2::254] when the
// kernel has IPv6 and it is enabled (net.ipv6.conf.all.disable_ipv6 and the
// link's own setting are 0) and ip6tables is installed; otherwise Setup says
// so once, at info level, and carries on with IPv4 only. "true" makes any of
// that an error; "false" never touches IPv6 (and removes IPv6 leftovers of
// ours). IPv6 addresses carry no label: ours is exactly fd00:ec2::254/128
// with the nodad flag on the link that carries our labelled IPv4 address (or
// on our dummy link).
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
// backends, for IPv4, IPv6 and ARP, because a leftover in the backend the
// host no longer uses still rewrites packets.
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
// # Libraries
//
// iptables and ip6tables are driven through github.com/coreos/go-iptables
// and links and addresses through github.com/vishvananda/netlink. arptables
// has a small exec adapter of its own (arptables_linux.go): go-iptables
// always passes --wait, which arptables rejects. Removal (Teardown, Cleanup)
// sends each table's deletions to iptables-restore --noflush, which
// go-iptables does not wrap: one transaction per table instead of a command
// per rule and chain, each of which waits for the kernel to release the old
// rules (a stop took a third of a second that way). If the restore fails it
// has changed nothing, and removal goes on one command at a time.
// arptables-restore has no --noflush, so ARP rules are always removed one
// command at a time.
//
// # Self-healing and restarts
//
// Run repairs what others remove (firewalld reloads, `iptables -F`,
// systemd-networkd dropping foreign addresses): it reacts to address removals
// (IPv4 and IPv6) through a netlink subscription, to nf_tables ruleset
// changes (the nft backend; every transaction commits a new generation,
// which the kernel announces to the NFNLGRP_NFTABLES group: a plain netlink
// socket from vishvananda/netlink's nl package, read only as far as the
// message type, so no nftables library is needed), acting 0.1 s after a
// change and at most once a second, and re-checks everything every
// Config.ReconcileInterval (all the legacy backend has), converging the owned chains to exactly the planned
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
// a closed port: connection refused for the host's processes until the next
// start's Cleanup and Setup (the fence keeps dropping everyone else's).
// Credentials are never served by anything else meanwhile, but on a network
// where another host answers 169.254.169.254 clients would reach it; a host
// that must prevent that should add its own REJECT rule for the address.
package netredirect
