// Package daemon is the life cycle of `imds-shim serve`: the start-up order,
// systemd notification, reload on SIGHUP, the watchdog, health, status and
// an orderly stop that removes everything the daemon installed.
//
// Every side effect is injected through Deps, declared here as small
// interfaces, so that tests drive the whole life cycle with fakes and the
// production wiring lives in one place (wire.go).
//
// Every listener (the metadata API, metrics/healthz, the control socket) is
// a net/http.Server built by NewHTTPServer with Limits: header, idle and
// write (slow reader) timeouts, a header size bound and a per-listener
// connection cap, with net/http's errors logged through slog and every
// connection's opening and closing reason reported to a ConnObserver. The
// cap is a small semaphore in the listener wrapper rather than
// golang.org/x/net/netutil.LimitListener, whose connection type hides the
// socket that Deps.ConnContext (caller identification) needs to query. No
// handler reads a request body, so there is no ReadTimeout: a request that
// carries one is answered unread and its connection closed, and a handler
// that does read one gets the header timeout for it.
//
// The metadata API listens on every address the redirect leads to:
// imds.listen and, when the network's Setup decided to answer at
// [fd00:ec2::254] (ListenerPlanner), that address on the same port; one
// handler, one hop limit per accepted connection, one port rule for all.
// Listeners are bound after Setup at start, since the addresses they bind
// exist only then. A reload binds what it can before the redirect moves
// (imds.listen, and the IPv6 address on a new port), the rest right after
// the new network's Setup (IPv6 turned on; a failure puts the previous
// redirect back), and closes a listener only once no plan needs it.
//
// No other user can take the metadata endpoint: serve refuses a listen
// port at or above net.ipv4.ip_unprivileged_port_start (the unit grants
// CAP_NET_BIND_SERVICE for the default, 254) unless the operator allowed
// it; a reload never closes a listener that stays configured (a new hop
// limit applies in place, a new address is bound before the old one is
// released); and the watchdog and /healthz probe the listener and the
// endpoint with a one-time challenge only this process can answer, so
// they fail when anything else answers there. The metrics listener's
// default port is unprivileged: another process holding it does not stop
// the daemon, which serves credentials without metrics, says so (status,
// log, systemd's status line) and binds the address once it is free.
//
// The credential engine is one value for every configured role
// (credentials.Set in production). Start fails with ExitCredentials only
// when the engine's Fetch fails, which for a Set means no role serves. An
// engine that names its failing roles (Failing) keeps /healthz at 200 with
// those roles listed while at least one serves: a restart cannot make STS
// accept a role. On a reload the new engine takes over the refreshers it
// shares with the old one (Acquire) before the old one's loop stops.
package daemon
