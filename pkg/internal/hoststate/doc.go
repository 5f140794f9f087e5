// Package hoststate takes a snapshot of what imds-shim may change in a
// network namespace, as facts read from the kernel, and compares two
// snapshots: links, addresses, iptables rules and chains of both backends
// (iptables-nft and iptables-legacy, IPv4 and IPv6; arptables-nft and
// ebtables-nft) and the sysctls a redirect could touch.
//
// It is the one state comparison of the project: the Go tests, the booted
// systemd end-to-end test (test/e2e), the stock-kernel suite
// (test/stock-kernel) and the demo all use it, the shell scripts through the
// test/hoststate command.
//
// What is compared, and what is not:
//   - links by name, kind, alias and whether they are up; never by index or
//     hardware address, which change when a link is recreated;
//   - addresses by link name, prefix, scope and label; never by index,
//     lifetime or flags such as tentative or dadfailed, which change while
//     duplicate address detection runs. The IPv6 link-local address the
//     kernel gives imds-shim's own dummy link (alias "imds-shim") is left
//     out: it is new each time the link is created. Link-local addresses of
//     every other link are compared as they are;
//   - iptables rules as iptables-save prints them (no counters), user chains,
//     likewise arptables-nft's and ebtables-nft's where they are installed,
//     and built-in chains only where their policy is not ACCEPT: iptables-nft
//     leaves a table once used registered with empty built-in chains, which
//     are no trace of anyone's rules;
//   - the sysctls route_localnet, arp_ignore, arp_announce, rp_filter and
//     accept_local of every IPv4 interface entry, disable_ipv6 of every IPv6
//     one, and net.ipv4.ip_forward;
//   - on request, the named network namespaces under /run/netns.
//
// netlink (github.com/vishvananda/netlink, the library the daemon itself uses)
// reads links and addresses; iptables-save is the only complete reader of
// both iptables backends' rules in their canonical form, so it is run, once
// per backend and family.
package hoststate
