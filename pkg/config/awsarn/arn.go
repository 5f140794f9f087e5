// Package awsarn is imds-shim's one place for AWS names: the partition table
// (the AWS SDK's own endpoint data, embedded), the region rule, the endpoint
// override rule, and the parsers for the ARNs the configuration holds (IAM roles and policies, IAM
// Roles Anywhere trust anchors and profiles). It builds on
// github.com/aws/aws-sdk-go-v2/aws/arn, which splits an ARN but checks none
// of the service's rules; those are here.
package awsarn

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws/arn"
)

// Role is a parsed IAM role ARN, arn:PARTITION:iam::ACCOUNT:role/PATH/NAME.
type Role struct {
	// Partition is the partition's ID (aws, aws-cn, aws-eusc, …).
	Partition string
	// AccountID is the 12-digit account that owns the role.
	AccountID string
	// Path is the role's IAM path, "/" or "/a/b/".
	Path string
	// Name is the role name without its path; IMDS lists it under
	// iam/security-credentials/.
	Name string
}

// String returns the ARN in its canonical form, "" for the zero Role.
func (r Role) String() string {
	if r.Name == "" {
		return ""
	}
	return "arn:" + r.Partition + ":iam::" + r.AccountID + ":role" + r.Path + r.Name
}

// IsZero reports whether r is the zero Role (no role configured).
func (r Role) IsZero() bool { return r == Role{} }

var (
	accountRE = regexp.MustCompile(`^[0-9]{12}$`)
	// IAM: role names are 1..64 of [\w+=,.@-]; path segments are
	// printable ASCII without '/', the whole path at most 512.
	// (Lengths are checked apart: regexp compiles {1,64} into 64 copies.)
	roleNameRE = regexp.MustCompile(`^[\w+=,.@-]+$`)
	pathRE     = regexp.MustCompile(`^/([\x21-\x2E\x30-\x7E]+/)*$`)
	policyRE   = regexp.MustCompile(`^policy(/[\x21-\x2E\x30-\x7E]+)*/[\w+=,.@-]+$`)
	raIDRE     = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

// split parses s with the SDK's ARN splitter and checks what every ARN we
// accept has in common: a known partition and the service.
func split(s, service string) (arn.ARN, []error) {
	if len(s) < 20 || len(s) > 2048 {
		return arn.ARN{}, []error{errors.New("want 20 to 2048 characters")}
	}
	a, err := arn.Parse(s)
	if err != nil {
		return arn.ARN{}, []error{errors.New("want arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE")}
	}
	var errs []error
	if _, ok := LookupPartition(a.Partition); !ok {
		errs = append(errs, fmt.Errorf("partition %q is not one of %s", a.Partition, partitionIDs()))
	}
	if a.Service != service {
		errs = append(errs, fmt.Errorf("service is %q, want %s", a.Service, service))
	}
	return a, errs
}

func joinErr(s, what string, errs []error) error {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return fmt.Errorf("%q is not %s: %s", s, what, strings.Join(msgs, "; "))
}

// ParseRole parses and checks an IAM role ARN in any known partition.
// The error names every part that is wrong.
func ParseRole(s string) (Role, error) {
	a, errs := split(s, "iam")
	if a.Partition == "" && len(errs) > 0 {
		return Role{}, joinErr(s, "an IAM role ARN such as arn:aws:iam::123456789012:role/NAME", errs)
	}
	if a.Region != "" {
		errs = append(errs, fmt.Errorf("region is %q, want empty (IAM is global)", a.Region))
	}
	if !accountRE.MatchString(a.AccountID) {
		errs = append(errs, fmt.Errorf("account %q is not 12 digits", a.AccountID))
	}
	r := Role{Partition: a.Partition, AccountID: a.AccountID}
	if rest, ok := strings.CutPrefix(a.Resource, "role/"); !ok {
		errs = append(errs, fmt.Errorf("resource %q does not start with role/", a.Resource))
	} else {
		i := strings.LastIndexByte(rest, '/')
		r.Path, r.Name = "/"+rest[:i+1], rest[i+1:] // i == -1: path "/"
		if len(r.Name) > 64 || !roleNameRE.MatchString(r.Name) {
			errs = append(errs, fmt.Errorf("role name %q is not 1 to 64 of letters, digits and +=,.@_-", r.Name))
		}
		if len(r.Path) > 512 || !pathRE.MatchString(r.Path) {
			errs = append(errs, fmt.Errorf("role path %q is not /…/ of printable characters (at most 512)", r.Path))
		}
	}
	if len(errs) > 0 {
		return Role{}, joinErr(s, "an IAM role ARN such as arn:aws:iam::123456789012:role/NAME", errs)
	}
	return r, nil
}

// CheckPolicy checks a managed IAM policy ARN (AWS-managed or an account's).
func CheckPolicy(s string) error {
	a, errs := split(s, "iam")
	if a.Partition == "" && len(errs) > 0 {
		return joinErr(s, "an IAM policy ARN such as arn:aws:iam::aws:policy/ReadOnlyAccess", errs)
	}
	if a.Region != "" {
		errs = append(errs, fmt.Errorf("region is %q, want empty (IAM is global)", a.Region))
	}
	if a.AccountID != "aws" && !accountRE.MatchString(a.AccountID) {
		errs = append(errs, fmt.Errorf("account %q is not 12 digits or aws", a.AccountID))
	}
	if name := a.Resource[strings.LastIndexByte(a.Resource, '/')+1:]; len(name) > 128 || !policyRE.MatchString(a.Resource) {
		errs = append(errs, fmt.Errorf("resource %q is not policy/PATH/NAME", a.Resource))
	}
	if len(errs) > 0 {
		return joinErr(s, "an IAM policy ARN such as arn:aws:iam::aws:policy/ReadOnlyAccess", errs)
	}
	return nil
}

// RolesAnywhere is a parsed IAM Roles Anywhere ARN,
// arn:PARTITION:rolesanywhere:REGION:ACCOUNT:KIND/ID.
type RolesAnywhere struct {
	Partition, Region, AccountID string
	// Kind is "trust-anchor" or "profile".
	Kind string
	// ID is the resource's UUID.
	ID string
	// ARN is the ARN as given.
	ARN string
}

// Kinds of Roles Anywhere resources.
const (
	TrustAnchor = "trust-anchor"
	Profile     = "profile"
)

// ParseRolesAnywhere parses a Roles Anywhere ARN whose resource must be of
// kind (TrustAnchor or Profile). The region must belong to the partition.
func ParseRolesAnywhere(s, kind string) (RolesAnywhere, error) {
	what := "a Roles Anywhere " + kind + " ARN such as arn:aws:rolesanywhere:eu-west-1:123456789012:" + kind + "/UUID"
	a, errs := split(s, "rolesanywhere")
	if a.Partition == "" && len(errs) > 0 {
		return RolesAnywhere{}, joinErr(s, what, errs)
	}
	if p, ok := LookupPartition(a.Partition); ok && !p.HasRegion(a.Region) {
		errs = append(errs, fmt.Errorf("region %q is not a region of partition %s", a.Region, a.Partition))
	}
	if !accountRE.MatchString(a.AccountID) {
		errs = append(errs, fmt.Errorf("account %q is not 12 digits", a.AccountID))
	}
	id, ok := strings.CutPrefix(a.Resource, kind+"/")
	if !ok {
		errs = append(errs, fmt.Errorf("resource %q does not start with %s/", a.Resource, kind))
	} else if !raIDRE.MatchString(id) {
		errs = append(errs, fmt.Errorf("%s ID %q is not a lower-case UUID", kind, id))
	}
	if len(errs) > 0 {
		return RolesAnywhere{}, joinErr(s, what, errs)
	}
	return RolesAnywhere{Partition: a.Partition, Region: a.Region, AccountID: a.AccountID, Kind: kind, ID: id, ARN: s}, nil
}
