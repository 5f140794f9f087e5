package imds

import "regexp"

// The shapes EC2 gives its IDs, which the derived defaults must have
// (pkg/config checks configured values).
var (
	instanceRE = regexp.MustCompile(`^i-([0-9a-f]{8}|[0-9a-f]{17})$`)
	azIDRE     = regexp.MustCompile(`^[a-z0-9]{3,12}-az[0-9]{1,2}$`)
)
