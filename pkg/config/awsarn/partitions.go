package awsarn

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

//go:generate go run gen.go

// partitionsJSON is the SDK's own partition data, copied by gen.go.
//
//go:embed partitions.json
var partitionsJSON []byte

// Partition is one AWS partition as the SDK's endpoint data describes it.
type Partition struct {
	// ID is the name in ARNs: aws, aws-cn, aws-us-gov, aws-eusc, …
	ID string
	// DNSSuffix is the partition's service domain (amazonaws.com, …).
	DNSSuffix string
	// DefaultRegion is the partition's implicit global region (us-east-1
	// for aws): the region used when none is configured.
	DefaultRegion string
	// Regions are the regions the SDK data lists by name, without the
	// pseudo-regions such as aws-global.
	Regions []string

	regionRE *regexp.Regexp
}

// HasRegion reports whether region belongs to p: it is listed, or it matches
// the partition's region pattern (so a region launched after this build is
// accepted too, as the SDK accepts it).
func (p Partition) HasRegion(region string) bool {
	return slices.Contains(p.Regions, region) || p.regionRE.MatchString(region)
}

var partitions = func() []Partition {
	var doc struct {
		Partitions []struct {
			ID          string                     `json:"id"`
			RegionRegex string                     `json:"regionRegex"`
			Regions     map[string]json.RawMessage `json:"regions"`
			Outputs     struct {
				DNSSuffix            string `json:"dnsSuffix"`
				ImplicitGlobalRegion string `json:"implicitGlobalRegion"`
			} `json:"outputs"`
		} `json:"partitions"`
	}
	if err := json.Unmarshal(partitionsJSON, &doc); err != nil {
		panic(fmt.Sprintf("awsarn: embedded partitions.json: %v", err))
	}
	var out []Partition
	for _, p := range doc.Partitions {
		re := regexp.MustCompile(p.RegionRegex)
		q := Partition{ID: p.ID, DNSSuffix: p.Outputs.DNSSuffix, DefaultRegion: p.Outputs.ImplicitGlobalRegion, regionRE: re}
		for r := range p.Regions {
			if re.MatchString(r) {
				q.Regions = append(q.Regions, r)
			}
		}
		slices.Sort(q.Regions)
		out = append(out, q)
	}
	return out
}()

// Partitions returns every partition the SDK data knows.
func Partitions() []Partition { return slices.Clone(partitions) }

// LookupPartition returns the partition named id.
func LookupPartition(id string) (Partition, bool) {
	for _, p := range partitions {
		if p.ID == id {
			return p, true
		}
	}
	return Partition{}, false
}

// PartitionOfRegion returns the partition region belongs to.
func PartitionOfRegion(region string) (Partition, bool) {
	// Listed names first: a listed region never depends on pattern order.
	for _, p := range partitions {
		if slices.Contains(p.Regions, region) {
			return p, true
		}
	}
	for _, p := range partitions {
		if p.regionRE.MatchString(region) {
			return p, true
		}
	}
	return Partition{}, false
}

// partitionIDs lists the known partition names, for error messages.
func partitionIDs() string {
	ids := make([]string, len(partitions))
	for i, p := range partitions {
		ids[i] = p.ID
	}
	return strings.Join(ids, ", ")
}
