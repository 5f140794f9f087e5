package imds

import (
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// EC2 behaviour beyond the credential path, each point taken from an EC2
// capture published in an SDK or tool issue thread or from an SDK's source;
// the tests in fidelity_test.go cite them, and EC2-COMPATIBILITY.md
// collects them for users.

// ec2Leaves adds the entries EC2 serves that have an honest on-prem value:
// the maintenance event lists (empty: nothing is scheduled), the
// reservation ID, the block device names, the security groups and the
// public keys when configured. Leaves with no honest value (ramdisk-id,
// kernel-id, public-ipv4, spot/, ...) stay absent, so 404 as on an EC2
// instance where they do not apply.
func ec2Leaves(cfg Config, d derived, set func(p, v string), l map[string]leaf) {
	// AWS Node Termination Handler polls scheduled and errors on 404;
	// EC2 answers "[]" for both when there are no events.
	set("meta-data/events/maintenance/scheduled", "[]")
	set("meta-data/events/maintenance/history", "[]")
	set("meta-data/reservation-id", d.reservationID)
	set("meta-data/block-device-mapping/ami", d.rootDevice)
	set("meta-data/block-device-mapping/root", d.rootDevice)
	set("meta-data/security-groups", strings.Join(cfg.SecurityGroups, "\n"))
	if len(cfg.PublicKeys) == 0 {
		return
	}
	// public-keys/ lists "<index>=<name>", while the directory to fetch
	// is public-keys/<index>/ with one entry, openssh-key.
	names := slices.Sorted(maps.Keys(cfg.PublicKeys))
	listing := make([]string, len(names))
	for i, n := range names {
		idx := strconv.Itoa(i)
		listing[i] = idx + "=" + n
		set("meta-data/public-keys/"+idx+"/openssh-key", cfg.PublicKeys[n])
	}
	l["meta-data/public-keys"] = leaf{kind: kindListing, data: []byte(strings.Join(listing, "\n"))}
}

// cleanPath collapses runs of '/' into one, as EC2 does (it serves
// /latest//meta-data/... like /latest/meta-data/...). It allocates only
// when there is something to collapse.
func cleanPath(p string) string {
	if !strings.Contains(p, "//") {
		return p
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && i > 0 && p[i-1] == '/' {
			continue
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// ec2HostName reports whether h (without port or trailing dot) is one of
// the names EC2's resolver gives the endpoint: instance-data,
// instance-data.ec2.internal (us-east-1's domain) and
// instance-data.<region>.compute.internal for the configured region.
func ec2HostName(h, region string) bool {
	if len(h) < len("instance-data") || !strings.EqualFold(h[:len("instance-data")], "instance-data") {
		return false
	}
	rest := strings.ToLower(h[len("instance-data"):])
	return rest == "" || rest == ".ec2.internal" || rest == "."+region+".compute.internal"
}

// ec2RequestGate returns the status EC2 answers r with before looking at
// its path, or 0 to serve it; isToken says the path is a version's
// api/token and slash that it ended in '/'. Expect is refused before any
// body is read (417). A proxy's X-Forwarded-For on a token PUT or on a
// request carrying a token, and a PUT to api/token/, are 403, which the
// SDKs take as "no IMDSv2 here" and fall back to IMDSv1, where a 400
// would be fatal to them. A tokenless GET through a proxy is served, as
// on EC2 (optional mode answers it, required mode refuses it with 401).
func ec2RequestGate(r *http.Request, isToken, slash bool) int {
	if _, ok := r.Header["Expect"]; ok {
		return http.StatusExpectationFailed
	}
	_, xff := r.Header[hForwardedFor]
	put := isToken && r.Method == http.MethodPut
	if xff && (put || len(r.Header[hToken]) > 0) {
		return http.StatusForbidden
	}
	if put && slash {
		return http.StatusForbidden
	}
	return 0
}
