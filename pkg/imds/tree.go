package imds

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imds-shim/imds-shim/pkg/imds/entryname"
)

// Limits on what a metadata directory may contribute. EC2 caps user data at
// 16 KiB; the file cap leaves room for larger documents.
const (
	MaxMetadataFileSize  = 64 << 10
	MaxMetadataDirTotal  = 1 << 20
	MaxMetadataDirValues = 1024
)

// versions are the API versions EC2 lists at "/", oldest first. Each is
// served like latest.
var versions = []string{
	"1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15",
	"2008-02-01", "2008-09-01", "2009-04-04", "2011-01-01", "2011-05-01", "2012-01-12",
	"2014-02-25", "2014-11-05", "2015-10-20", "2016-04-19", "2016-06-30", "2016-09-02",
	"2018-03-28", "2018-08-17", "2018-09-24", "2019-10-01", "2020-10-27", "2021-01-03",
	"2021-03-23", "2021-07-15", "2022-09-24", "2024-04-11", "latest",
}

// nodeKind says how a tree entry is answered.
type nodeKind uint8

const (
	kindStatic      nodeKind = iota // body precomputed
	kindCredentials                 // security-credentials/<role>
	kindExtended                    // security-credentials-extended/<role>
	kindIAMInfo                     // iam/info (LastUpdated follows the credentials)
	kindListing                     // a directory listing given whole (public-keys/), not derived from its children
	kindIdentity                    // the generated identity document (its accountId follows the caller's role)
	kindRoleListing                 // iam/security-credentials/ with Roles: the caller's role name
	kindIAMDir                      // iam/ with Roles: listed only to a caller that has a role
)

// response is a precomputed body, its Content-Type and its Content-Length.
type response struct {
	body   []byte
	ctype  string
	length string
}

func newResponse(body []byte, ctype string) response {
	return response{body: body, ctype: ctype, length: strconv.Itoa(len(body))}
}

type node struct {
	kind nodeKind
	resp response // for kindStatic
}

// leaf is one value of the tree before it is assembled.
type leaf struct {
	data []byte
	kind nodeKind
}

// tree is the assembled metadata below a version root, keyed by the path
// without leading or trailing slash ("" is the version root's listing).
type tree map[string]*node

// derived is what the config resolves to once defaults are applied.
type derived struct {
	role               roleARN
	region, az, azID   string
	domain             string
	instanceID, image  string
	reservationID      string
	rootDevice         string
	instanceType, arch string
	hostname, localHN  string
	localIPv4          string
	mac                string
	pending            time.Time
	profileARN         string
	profileID          string
}

func resolve(cfg Config, host HostFacts, now time.Time) (derived, error) {
	role, err := parseRoleARN(cfg.primaryRole())
	if err != nil {
		return derived{}, err
	}
	p := partitions[role.partition]
	d := derived{role: role}
	d.region = firstNonEmpty(cfg.Region, p.region)
	if cfg.Region == "" && cfg.AvailabilityZone != "" {
		d.region = cfg.AvailabilityZone[:len(cfg.AvailabilityZone)-1]
	}
	d.az = firstNonEmpty(cfg.AvailabilityZone, d.region+"a")
	d.azID = firstNonEmpty(cfg.AvailabilityZoneID, defaultAZID(d.az))
	d.domain = firstNonEmpty(cfg.Domain, p.domain)
	d.instanceID = firstNonEmpty(cfg.InstanceID, defaultInstanceID(host))
	d.reservationID = firstNonEmpty(cfg.ReservationID, defaultReservationID(host))
	d.rootDevice = firstNonEmpty(cfg.RootDeviceName, DefaultRootDeviceName)
	d.image = firstNonEmpty(cfg.ImageID, DefaultImageID)
	d.instanceType = firstNonEmpty(cfg.InstanceType, DefaultInstanceType)
	d.arch = firstNonEmpty(cfg.Architecture, goArch(runtime.GOARCH))
	d.hostname = firstNonEmpty(cfg.Hostname, host.Hostname)
	d.localHN = firstNonEmpty(cfg.LocalHostname, d.hostname)
	if cfg.LocalIPv4.IsValid() {
		d.localIPv4 = cfg.LocalIPv4.String()
	} else if host.IPv4.IsValid() {
		d.localIPv4 = host.IPv4.String()
	}
	d.mac = strings.ToLower(firstNonEmpty(cfg.MAC, host.MAC))
	d.pending = cfg.PendingTime
	if d.pending.IsZero() {
		d.pending = host.BootTime
	}
	if d.pending.IsZero() {
		d.pending = now
	}
	d.profileARN = firstNonEmpty(cfg.InstanceProfileARN,
		"arn:"+role.partition+":iam::"+role.account+":instance-profile"+role.path+role.name)
	d.profileID = firstNonEmpty(cfg.InstanceProfileID, defaultInstanceProfileID(cfg.primaryRole()))
	return d, nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func goArch(a string) string {
	switch a {
	case "arm64":
		return "arm64"
	case "386":
		return "i386"
	}
	return "x86_64"
}

// leaves returns every value of the tree for cfg, defaults first, then the
// metadata directory, then Overrides; the identity document is rendered
// last from the final values unless it is itself overridden.
func leaves(cfg Config, d derived, dir map[string][]byte) map[string]leaf {
	l := map[string]leaf{}
	set := func(p, v string) {
		if v != "" {
			l[p] = leaf{data: []byte(v)}
		}
	}
	set("meta-data/ami-id", d.image)
	set("meta-data/ami-launch-index", "0")
	set("meta-data/ami-manifest-path", "(unknown)")
	set("meta-data/instance-id", d.instanceID)
	set("meta-data/instance-type", d.instanceType)
	set("meta-data/instance-life-cycle", "on-demand")
	set("meta-data/hostname", d.hostname)
	set("meta-data/local-hostname", d.localHN)
	set("meta-data/local-ipv4", d.localIPv4)
	set("meta-data/mac", d.mac)
	if d.mac != "" {
		m := "meta-data/network/interfaces/macs/" + d.mac + "/"
		set(m+"device-number", "0")
		set(m+"local-hostname", d.localHN)
		set(m+"local-ipv4s", d.localIPv4)
		set(m+"mac", d.mac)
	}
	set("meta-data/placement/availability-zone", d.az)
	set("meta-data/placement/availability-zone-id", d.azID)
	set("meta-data/placement/region", d.region)
	set("meta-data/services/domain", d.domain)
	set("meta-data/services/partition", d.role.partition)
	ec2Leaves(cfg, d, set, l)
	for k, v := range cfg.Tags {
		l["meta-data/tags/instance/"+k] = leaf{data: []byte(v)}
	}
	if cfg.UserData != nil {
		l["user-data"] = leaf{data: cfg.UserData}
	}
	for p, v := range dir {
		l[p] = leaf{data: v}
	}
	for p, v := range cfg.Overrides {
		l[p] = leaf{data: []byte(v)}
	}
	const doc = "dynamic/instance-identity/document"
	if _, ok := l[doc]; !ok {
		l[doc] = leaf{kind: kindIdentity, data: identityDocument(d, l)}
	}
	l["meta-data/iam/info"] = leaf{kind: kindIAMInfo}
	l["meta-data/iam/security-credentials/"+d.role.name] = leaf{kind: kindCredentials}
	l["meta-data/iam/security-credentials-extended/"+d.role.name] = leaf{kind: kindExtended}
	return l
}

// hidden entries are served but not listed by their parent: EC2's iam/
// listing shows only info and security-credentials/.
var hidden = map[string]bool{"meta-data/iam/security-credentials-extended": true}

const (
	hdrTextPlain   = "text/plain"
	hdrOctetStream = "application/octet-stream"
	hdrTextHTML    = "text/html"
)

// build assembles the tree: one node per value and one listing per
// directory, children sorted, sub-directories suffixed with '/', joined
// with LF and no trailing LF.
func build(l map[string]leaf) (tree, error) {
	// EC2 lists user-data at the version root whether or not the
	// instance has any; fetching it is then 404 (see fidelity.go).
	children := map[string]map[string]bool{"": {"user-data": false}} // dir → child name → is dir
	for p, v := range l {
		if v.kind == kindListing {
			continue // a directory whose children are added below it
		}
		elems := strings.Split(p, "/")
		for i := range elems {
			parent := strings.Join(elems[:i], "/")
			full := strings.Join(elems[:i+1], "/")
			isDir := i < len(elems)-1
			if isDir {
				if v, ok := l[full]; ok && v.kind != kindListing {
					return nil, fmt.Errorf("%s is both a value and a directory", full)
				}
			}
			if children[parent] == nil {
				children[parent] = map[string]bool{}
			}
			if !hidden[full] {
				children[parent][elems[i]] = isDir
			}
			if isDir && children[full] == nil {
				children[full] = map[string]bool{}
			}
		}
	}
	t := tree{}
	for dir, kids := range children {
		names := make([]string, 0, len(kids))
		for n, isDir := range kids {
			// EC2's version root lists "dynamic", "meta-data" and
			// "user-data" without a slash; deeper listings mark
			// sub-categories with one.
			if isDir && dir != "" {
				n += "/"
			}
			names = append(names, n)
		}
		slices.Sort(names)
		t[dir] = &node{resp: newResponse([]byte(strings.Join(names, "\n")), hdrTextPlain)}
	}
	for p, v := range l {
		if v.kind == kindListing {
			if children[p] == nil {
				return nil, fmt.Errorf("%s has a listing but no entries", p)
			}
			t[p] = &node{resp: newResponse(v.data, hdrTextPlain)}
			continue
		}
		n := &node{kind: v.kind}
		if v.kind == kindStatic || v.kind == kindIdentity {
			ct := hdrTextPlain
			if p == "user-data" {
				ct = hdrOctetStream
			}
			n.resp = newResponse(v.data, ct)
		}
		t[p] = n
	}
	return t, nil
}

// rootListing is the body of "/": the versions, one per line.
var rootListing = newResponse([]byte(strings.Join(versions, "\n")), hdrTextPlain)

// jsonField is one member of an EC2-style pretty-printed JSON object;
// a nil value renders as null.
type jsonField struct {
	key string
	val *string
}

// renderJSON prints fields the way IMDS does ("key" : value, two-space
// indent, no trailing newline), with values JSON-escaped.
func renderJSON(fields []jsonField) []byte {
	var b bytes.Buffer
	b.WriteString("{\n")
	for i, f := range fields {
		b.WriteString("  ")
		writeJSONString(&b, f.key)
		b.WriteString(" : ")
		if f.val == nil {
			b.WriteString("null")
		} else {
			writeJSONString(&b, *f.val)
		}
		if i < len(fields)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("}")
	return b.Bytes()
}

// writeJSONString writes s as a JSON string. HTML characters stay as they
// are (IMDS is not a web page); control characters and quotes are escaped.
func writeJSONString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)       // a string always encodes
	b.Truncate(b.Len() - 1) // Encode's newline
}

func str(s string) *string { return &s }

// timestamp formats t as EC2 does: UTC, whole seconds, Z.
func timestamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

func identityDocument(d derived, l map[string]leaf) []byte {
	val := func(p string) *string {
		if v, ok := l[p]; ok && len(v.data) > 0 {
			return str(string(v.data))
		}
		return nil
	}
	// Region and zone follow the served values, so an override of one
	// keeps the document consistent with what the leaves say.
	return renderJSON([]jsonField{
		{"accountId", str(d.role.account)},
		{"architecture", str(d.arch)},
		{"availabilityZone", val("meta-data/placement/availability-zone")},
		{"billingProducts", nil},
		{"devpayProductCodes", nil},
		{"marketplaceProductCodes", nil},
		{"imageId", val("meta-data/ami-id")},
		{"instanceId", val("meta-data/instance-id")},
		{"instanceType", val("meta-data/instance-type")},
		{"kernelId", nil},
		{"pendingTime", str(timestamp(d.pending))},
		{"privateIp", val("meta-data/local-ipv4")},
		{"ramdiskId", nil},
		{"region", val("meta-data/placement/region")},
		{"version", str("2017-09-30")},
	})
}

// readMetadataDir returns the values under dir keyed by their path below
// the version root. It reads through an os.Root, so neither ".." nor a
// symlink can reach outside dir; it skips dot-files, refuses anything that
// is not a regular file, odd names, deep nesting, and files or totals over
// the limits, naming the offending path. Trailing LF (or CRLF) is trimmed
// from values other than user-data, which is served byte for byte.
func readMetadataDir(dir string) (map[string][]byte, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening metadata dir: %w", err)
	}
	defer root.Close()
	out := map[string][]byte{}
	total := 0
	walkErr := fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if err := entryname.Check(d.Name()); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if strings.Count(p, "/") >= maxDepth {
				return fmt.Errorf("%s: deeper than %d elements", p, maxDepth)
			}
			return nil
		}
		if _, err := checkEntryPath(p); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if t := d.Type(); t&fs.ModeSymlink == 0 && !t.IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		data, err := readCapped(root, p)
		if err != nil {
			return err
		}
		if len(out) >= MaxMetadataDirValues {
			return fmt.Errorf("%s: more than %d values", p, MaxMetadataDirValues)
		}
		if total += len(data); total > MaxMetadataDirTotal {
			return fmt.Errorf("%s: values exceed %d bytes in total", p, MaxMetadataDirTotal)
		}
		if p != "user-data" {
			data = bytes.TrimSuffix(data, []byte("\n"))
			data = bytes.TrimSuffix(data, []byte("\r"))
		}
		out[p] = data
		return nil
	})
	if walkErr != nil {
		return nil, fmt.Errorf("reading metadata dir %s: %w", dir, walkErr)
	}
	return out, nil
}

// readCapped reads one file through root (following a symlink only if it
// stays inside), non-blocking so that a symlink to a FIFO cannot hang the
// reload, and refuses non-regular files and files over the cap.
func readCapped(root *os.Root, p string) ([]byte, error) {
	f, err := root.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err // *PathError already names p
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", p)
	}
	if st.Size() > MaxMetadataFileSize {
		return nil, fmt.Errorf("%s: %d bytes exceed the %d-byte limit", p, st.Size(), MaxMetadataFileSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxMetadataFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	if len(data) > MaxMetadataFileSize {
		return nil, fmt.Errorf("%s: exceeds the %d-byte limit", p, MaxMetadataFileSize)
	}
	return data, nil
}
