package awsarn

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
)

// CheckEndpoint checks an endpoint override URL (sts_endpoint,
// roles_anywhere.endpoint): http(s) with a host, and plain http only for
// loopback and private IP literals, because the response carries secret keys. Its errors never repeat a
// password from the URL.
func CheckEndpoint(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		// url's own error quotes the input, which may hold a password.
		return fmt.Errorf("not a URL")
	}
	s = u.Redacted()
	if u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%q must be an http(s)://HOST[:PORT] URL", s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q must not carry user info, a query or a fragment", s)
	}
	if u.Scheme == "http" {
		host := u.Hostname()
		ip, err := netip.ParseAddr(host)
		if host != "localhost" && (err != nil || !(ip.IsLoopback() || ip.IsPrivate())) {
			return fmt.Errorf("%q: plain http is allowed only for loopback or private IP addresses, because the response carries secret keys", s)
		}
	}
	if p := u.Port(); p != "" {
		if _, err := net.LookupPort("tcp", p); err != nil {
			return fmt.Errorf("%q: bad port %q", s, p)
		}
	}
	return nil
}
