// Package callers tells who is calling the metadata service, and which role
// that caller gets.
//
// # Identification
//
// After the nat OUTPUT DNAT, a host process's connection to
// 169.254.169.254:80 arrives at the daemon's listener as an ordinary local
// TCP connection, and the kernel knows the caller's socket: its uid and the
// cgroup it was created in. Identifier.Identify asks for them, once per
// accepted connection (the daemon calls it from http.Server.ConnContext):
//
//  1. getsockopt(SO_ORIGINAL_DST) (IP6T_SO_ORIGINAL_DST for IPv6) on the
//     accepted socket gives the address the caller connected to, because the
//     caller's own socket is connected to 169.254.169.254:80, not to the
//     listener. A connection made to the listener directly has no NAT record
//     and is looked up with the listener's address.
//  2. One exact NETLINK_SOCK_DIAG SOCK_DIAG_BY_FAMILY request (inet_diag,
//     without NLM_F_DUMP) keyed on the caller's address and port and that
//     original destination returns the caller's socket: uid, inode, cookie
//     and, as attribute INET_DIAG_CGROUP_ID (Linux ≥ 5.7, sent for every
//     full socket without asking for it in idiag_ext), its cgroup id. A
//     dual-stack AF_INET6 socket connected to a v4 address (Java's) is found
//     by the AF_INET request on current kernels; if not, the request is
//     repeated as AF_INET6 with ::ffff:-mapped addresses.
//     If no socket has the address the listener sees but that address is
//     local, netfilter may have remapped the caller's source port: a
//     connection through the DNAT whose reply tuple a connection made
//     straight to the listener from the same address and port already holds
//     (the daemon's own probe makes those) gets another source port. One
//     exact ctnetlink IPCTNL_MSG_CT_GET request keyed on the reply tuple then
//     gives the connection's original tuple, the caller's own address and
//     port, and the socket is looked up under it. Without it the same caller
//     would be Unidentified on one connection and itself on the next, and an
//     IMDSv2 token bound on one would be refused (401) on the other.
//  3. The cgroup id is the inode number of the cgroup's directory in the
//     cgroup2 hierarchy (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid
//     hosts): a walk of that hierarchy maps it to a path, cached and walked
//     again on a miss (a restarted unit gets a new cgroup, hence a new id).
//     A miss walks the system manager's slices and units first and the units'
//     own subtrees, which users can fill with cgroups, only if that fails.
//     open_by_handle_at would map it directly, but needs CAP_DAC_READ_SEARCH,
//     which the unit's system-call filter denies. The path names the systemd
//     unit (see UnitOf: the first unit under the root's slices, never a name
//     a user chose inside user@UID.service or a delegated subtree).
//  4. The uid's name and primary group come from /etc/passwd and /etc/group
//     (os/user), cached until either file changes.
//
// Every step that cannot vouch for the caller makes it Unidentified, never
// someone else. In particular the kernel answers for a caller that has
// already closed with a TIME_WAIT stub that reports uid 0 (root) and inode 0,
// and for an orphaned socket with inode 0: inode 0, a missing cgroup
// attribute and "no such socket" are all Unidentified. A cgroup id that no
// walk finds is Unidentified too: matching such a caller by uid alone could
// give a root service another entry's role than its unit's.
//
// A connection whose caller's socket is not in this network namespace (a
// container behind a bridge, reaching the listener through a PREROUTING
// DNAT) is not found by sock_diag, which sees only its own namespace. If its
// source address is not one of this host's (an RTM_GETROUTE lookup; the
// kernel drops packets from another link whose source is local), the caller
// is a Source caller, known by that address alone, and it can never match a
// host user's or unit's entry.
//
// On a cgroup v1-only host (RHEL 8's default) every socket reports the root
// cgroup: callers are told apart by uid and group only, and Layout says so
// for `imds-shim check`. On kernels that do not report INET_DIAG_CGROUP_ID
// at all (before 5.7) every caller is Unidentified.
//
// # Why not vishvananda/netlink
//
// netlink.SocketGet, the obvious library call, sends NLM_F_DUMP and filters
// in user space: 0.4–1 ms per call, growing with the number of sockets on
// the host; it does not find dual-stack sockets and does not decode the
// cgroup id. The exact request here is about 5 µs whatever the number of
// sockets (BenchmarkIdentify), so this package builds the request on
// golang.org/x/sys/unix itself. SO_PEERCRED, the other obvious way, does not
// work for TCP. Likewise its conntrack calls (ConntrackTableList) only dump
// the whole table; the remap case above needs one exact CT_GET.
//
// # Matching
//
// A Policy holds the configuration's `roles` entries in order; the first
// entry that matches a caller gives its role, else the top-level role, if
// there is one. Unidentified callers match no entry and get the top-level
// role only with `unidentified: default`. See Entry for what each matcher
// compares.
//
// # Caveats
//
// A socket keeps the uid and cgroup of the process that created it: a
// privileged proxy or fetcher on the host that requests a URL for someone
// else (SSRF) does so with its own identity, as on EC2. Users in passwd with
// a shared uid are named by the first entry for that uid.
//
// net/http calls ConnContext in its accept loop, so a cache miss's walk
// (about 9 µs per cgroup walked, measured with 1000) delays accepting on
// that listener; a user who connects from ever new cgroups of their own
// subtree makes every one of their connections a deep walk.
package callers
