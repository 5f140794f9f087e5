package credentials

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// RoleARN is a parsed IAM role ARN,
// arn:PARTITION:iam::ACCOUNT:role/PATH/NAME.
type RoleARN struct {
	// Partition is aws, aws-cn, aws-us-gov, aws-iso, aws-iso-b, …
	Partition string
	// AccountID is the 12-digit account that owns the role.
	AccountID string
	// Path is the role's IAM path, "/" or "/a/b/".
	Path string
	// Name is the role name without its path; IMDS serves it as the role
	// under iam/security-credentials/.
	Name string
}

// String returns the ARN in its canonical form.
func (a RoleARN) String() string {
	return "arn:" + a.Partition + ":iam::" + a.AccountID + ":role" + a.Path + a.Name
}

var (
	// Partitions are "aws" or "aws-" plus lower-case words (aws-cn,
	// aws-us-gov, aws-iso-b, aws-eusc, …), so new ones need no code change.
	partitionRE = regexp.MustCompile(`^aws(-[a-z0-9]+)*$`)
	accountRE   = regexp.MustCompile(`^[0-9]{12}$`)
	// IAM: role names are 1..64 of [\w+=,.@-]; path segments are printable
	// ASCII without '/'.
	roleNameRE = regexp.MustCompile(`^[\w+=,.@-]{1,64}$`)
	pathRE     = regexp.MustCompile(`^/([\x21-\x2E\x30-\x7E]+/)*$`)
)

// ParseRoleARN parses and checks an IAM role ARN in any partition. Errors
// name the part that is wrong.
func ParseRoleARN(s string) (RoleARN, error) {
	// STS limits RoleArn to 20..2048 characters.
	if len(s) < 20 || len(s) > 2048 {
		return RoleARN{}, fmt.Errorf("%q is not an IAM role ARN: want 20 to 2048 characters, like arn:aws:iam::123456789012:role/NAME", s)
	}
	parts := strings.SplitN(s, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" {
		return RoleARN{}, fmt.Errorf("%q is not an IAM role ARN: want arn:PARTITION:iam::ACCOUNT:role/NAME", s)
	}
	partition, service, region, account, resource := parts[1], parts[2], parts[3], parts[4], parts[5]
	var errs []error
	if !partitionRE.MatchString(partition) {
		errs = append(errs, fmt.Errorf("partition %q is not aws or aws-…", partition))
	}
	if service != "iam" {
		errs = append(errs, fmt.Errorf("service is %q, want iam", service))
	}
	if region != "" {
		errs = append(errs, fmt.Errorf("region is %q, want empty (IAM is global)", region))
	}
	if !accountRE.MatchString(account) {
		errs = append(errs, fmt.Errorf("account %q is not 12 digits", account))
	}
	a := RoleARN{Partition: partition, AccountID: account}
	if rest, ok := strings.CutPrefix(resource, "role/"); !ok {
		errs = append(errs, fmt.Errorf("resource %q does not start with role/", resource))
	} else {
		i := strings.LastIndexByte(rest, '/')
		a.Path, a.Name = "/"+rest[:i+1], rest[i+1:] // i == -1: path "/"
		if !roleNameRE.MatchString(a.Name) {
			errs = append(errs, fmt.Errorf("role name %q is not 1 to 64 of letters, digits and +=,.@_-", a.Name))
		}
		if len(a.Path) > 512 || !pathRE.MatchString(a.Path) {
			errs = append(errs, fmt.Errorf("role path %q is not /…/ of printable characters (at most 512)", a.Path))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return RoleARN{}, fmt.Errorf("%q is not an IAM role ARN: %s", s, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return a, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
