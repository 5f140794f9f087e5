package netredirect

import (
	"testing"

	"github.com/imds-shim/imds-shim/pkg/internal/nstest"
)

func TestMain(m *testing.M) {
	if helperMain() {
		return
	}
	nstest.Main(m)
}
