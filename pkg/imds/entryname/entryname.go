// Package entryname is the rule for one element of an instance-metadata
// path (a tag key, a security group name, a file under metadata_dir):
// printable UTF-8 without '/', not starting with '.', at most MaxLen bytes.
// Such a name cannot break a listing (no line break) or a URL path lookup.
// It is its own package so that pkg/config, which checks the names an
// operator writes, and pkg/imds, which checks what it puts into the tree,
// share one rule without depending on each other.
package entryname

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxLen bounds one path element (EC2 tag keys go to 128 bytes).
const MaxLen = 128

// Check reports what is wrong with n as one element of a metadata path.
func Check(n string) error {
	switch {
	case n == "":
		return errors.New("empty name")
	case len(n) > MaxLen:
		return fmt.Errorf("name longer than %d bytes", MaxLen)
	case n[0] == '.':
		return errors.New("name starts with '.'")
	case strings.ContainsRune(n, '/'):
		return errors.New("name contains '/'")
	case !utf8.ValidString(n) || HasControl(n):
		return errors.New("name has control characters or invalid UTF-8")
	}
	return nil
}

// HasControl reports whether s holds a control character (a line break
// would split a listing).
func HasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}
