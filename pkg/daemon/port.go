package daemon

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/imds-shim/imds-shim/pkg/config"
)

// checkPort refuses a metadata listener on a port that any user on this
// host may bind: whoever binds it while the daemon is down, or between a
// close and a bind, answers every SDK on the host with their own
// credentials. Ports below net.ipv4.ip_unprivileged_port_start need
// CAP_NET_BIND_SERVICE (the unit grants it); hosts that lowered that
// sysctl exist, so the check reads it rather than assuming 1024. The
// IPv6 listener ([fd00:ec2::254]) uses the same port, and the kernel
// applies this IPv4-named sysctl to IPv6 binds too (inet6_bind), so one
// check covers every metadata listener.
func (d *daemon) checkPort(cfg *config.Config) error {
	ap := cfg.IMDS.Listen
	if d.deps.AllowUnprivilegedPort != nil && d.deps.AllowUnprivilegedPort(cfg) {
		return nil
	}
	read := d.deps.UnprivilegedPortStart
	if read == nil {
		read = unprivilegedPortStart
	}
	start, err := read()
	if err != nil {
		return fmt.Errorf("imds.listen: cannot tell whether port %d is privileged on this host: %w", ap.Port(), err)
	}
	if int(ap.Port()) >= start {
		return fmt.Errorf("imds.listen: port %d can be bound by any user on this host (net.ipv4.ip_unprivileged_port_start = %d), "+
			"who could then answer every SDK here with their own credentials; use a port below %d (the default is 254), "+
			"or accept the risk explicitly with imds.allow_unprivileged_port: true", ap.Port(), start, start)
	}
	return nil
}

func unprivilegedPortStart() (int, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
