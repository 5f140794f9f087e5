package imds

import (
	"bufio"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// HostFacts are what the on-prem defaults are derived from. Zero fields mean
// "unknown": the entries they feed are then derived otherwise or omitted.
type HostFacts struct {
	Hostname  string
	IPv4      netip.Addr // of the default-route interface
	MAC       string     // of the default-route interface, lower-case
	MachineID string     // contents of /etc/machine-id
	BootTime  time.Time
}

// DiscoverHost reads the facts from this host, best effort: the host name,
// the machine ID at machineIDPath (DefaultMachineIDPath when empty), the
// boot time from /proc/stat, and the address and MAC of the interface that
// carries the IPv4 default route (/proc/net/route).
func DiscoverHost(machineIDPath string) HostFacts {
	if machineIDPath == "" {
		machineIDPath = DefaultMachineIDPath
	}
	var f HostFacts
	if h, err := os.Hostname(); err == nil {
		f.Hostname = h
	}
	if b, err := os.ReadFile(machineIDPath); err == nil {
		f.MachineID = strings.TrimSpace(string(b))
	}
	if fh, err := os.Open("/proc/stat"); err == nil {
		f.BootTime = parseBootTime(fh)
		fh.Close()
	}
	if fh, err := os.Open("/proc/net/route"); err == nil {
		name := parseDefaultRouteIface(fh)
		fh.Close()
		if name != "" {
			if ifi, err := net.InterfaceByName(name); err == nil {
				f.IPv4, f.MAC = ifaceFacts(ifi)
			}
		}
	}
	return f
}

func ifaceFacts(ifi *net.Interface) (netip.Addr, string) {
	var ip netip.Addr
	if addrs, err := ifi.Addrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if v, ok := netip.AddrFromSlice(n.IP); ok && v.Unmap().Is4() && v.Unmap().IsGlobalUnicast() {
					ip = v.Unmap()
					break
				}
			}
		}
	}
	mac := ""
	if len(ifi.HardwareAddr) == 6 {
		mac = strings.ToLower(ifi.HardwareAddr.String())
	}
	return ip, mac
}

// parseDefaultRouteIface returns the interface of the IPv4 default route
// with the lowest metric in /proc/net/route format, or "".
func parseDefaultRouteIface(r io.Reader) string {
	sc := bufio.NewScanner(r)
	best, bestMetric := "", -1
	first := true
	for sc.Scan() {
		if first { // header line
			first = false
			continue
		}
		fl := strings.Fields(sc.Text())
		if len(fl) < 8 {
			continue
		}
		flags, err := strconv.ParseUint(fl[3], 16, 32)
		if err != nil || flags&0x1 == 0 { // RTF_UP
			continue
		}
		if fl[1] != "00000000" || fl[7] != "00000000" {
			continue
		}
		metric, err := strconv.Atoi(fl[6])
		if err != nil {
			continue
		}
		if bestMetric < 0 || metric < bestMetric {
			best, bestMetric = fl[0], metric
		}
	}
	return best
}

// parseBootTime reads "btime <unix seconds>" from /proc/stat.
func parseBootTime(r io.Reader) time.Time {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "btime "); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && n > 0 {
				return time.Unix(n, 0).UTC()
			}
		}
	}
	return time.Time{}
}

// derivedHex returns n hex digits that depend only on label and seed, so a
// host keeps its instance ID across restarts and reinstalls of the shim.
func derivedHex(label, seed string, n int) string {
	sum := sha256.Sum256([]byte("imds-shim/" + label + "\x00" + seed))
	return hex.EncodeToString(sum[:])[:n]
}

// defaultInstanceID is i- + 17 hex derived from the machine ID, or from the
// host name when the machine ID is unknown.
func defaultInstanceID(f HostFacts) string {
	seed := f.MachineID
	if seed == "" {
		seed = "hostname:" + f.Hostname
	}
	return "i-" + derivedHex("instance-id", seed, 17)
}

// defaultReservationID is r- + 17 hex derived like defaultInstanceID (a
// different label, so the two never share digits).
func defaultReservationID(f HostFacts) string {
	seed := f.MachineID
	if seed == "" {
		seed = "hostname:" + f.Hostname
	}
	return "r-" + derivedHex("reservation-id", seed, 17)
}

// defaultInstanceProfileID is AIPA + 17 characters derived from the role ARN
// (real IDs are AIPA + 17 upper-case letters and digits).
func defaultInstanceProfileID(roleARN string) string {
	sum := sha256.Sum256([]byte("imds-shim/instance-profile-id\x00" + roleARN))
	return "AIPA" + base32.StdEncoding.EncodeToString(sum[:])[:17]
}

// azDirections abbreviates the direction words of region names the way EC2
// zone IDs do (us-east-1 → use1, ap-southeast-2 → apse2).
var azDirections = map[string]string{
	"east": "e", "west": "w", "north": "n", "south": "s", "central": "c",
	"northeast": "ne", "northwest": "nw", "southeast": "se", "southwest": "sw",
}

// defaultAZID builds an EC2-shaped zone ID from a zone name:
// us-east-1a → use1-az1. Real zone IDs map letters per account; this only
// has to be stable and well-formed.
func defaultAZID(az string) string {
	region, letter := az[:len(az)-1], az[len(az)-1]
	parts := strings.Split(region, "-")
	var b strings.Builder
	for i, p := range parts {
		switch {
		case i == 0:
			b.WriteString(p)
		case azDirections[p] != "":
			b.WriteString(azDirections[p])
		case i == len(parts)-1:
			b.WriteString(p)
		default:
			b.WriteByte(p[0])
		}
	}
	return b.String() + "-az" + strconv.Itoa(int(letter-'a')+1)
}
