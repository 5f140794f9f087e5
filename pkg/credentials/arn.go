package credentials

import (
	"slices"

	"github.com/imds-shim/imds-shim/pkg/config/awsarn"
)

// RoleARN is a parsed IAM role ARN, arn:PARTITION:iam::ACCOUNT:role/PATH/NAME
// (awsarn.Role: the one parser, shared with the configuration).
type RoleARN = awsarn.Role

// ParseRoleARN parses and checks an IAM role ARN in any known partition.
func ParseRoleARN(s string) (RoleARN, error) { return awsarn.ParseRole(s) }

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
