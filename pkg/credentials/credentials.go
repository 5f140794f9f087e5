package credentials

import (
	"errors"
	"log/slog"
	"time"
)

// Credentials is one set of temporary AWS credentials as STS issued them.
// It is a value: callers may keep and compare copies.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	// Expires is the expiry STS returned; it is never extended.
	Expires time.Time
	// LastUpdated is when this set was obtained.
	LastUpdated time.Time
	// RoleARN is the IAM role these credentials are for
	// (arn:PARTITION:iam::ACCOUNT:role/PATH/NAME).
	RoleARN string
	// AccountID is the role's account.
	AccountID string
}

// ErrNoCredentials is returned by Current when no set with enough life left
// exists: before the first fetch succeeds, or once the last good set is
// within its safety margin of expiry during an STS outage.
var ErrNoCredentials = errors.New("no valid credentials")

// String never prints secrets, so a Credentials value is safe in logs.
func (c Credentials) String() string {
	return "credentials{role=" + c.RoleARN + " expires=" + c.Expires.UTC().Format(time.RFC3339) + "}"
}

// LogValue keeps secrets out of structured logs whatever the handler.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("role", c.RoleARN),
		slog.Time("expires", c.Expires),
	)
}
