// Command testsummary reads `go test -json` on stdin, prints the ordinary
// test output, and ends with the tests that were skipped, with their
// reasons, and one closing count — so a CI log shows at a glance whether the
// root-only tests ran or skipped. It exits 1 when a test or package failed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	var passed, failed, skipped int
	var failedPkgs []string
	// The last output line of a test holds its skip reason.
	lastOut := map[string]string{}
	var skips []string
	for in.Scan() {
		var e event
		if err := json.Unmarshal(in.Bytes(), &e); err != nil {
			fmt.Println(in.Text()) // build errors and the like
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			fmt.Print(e.Output)
			if t := strings.TrimSpace(e.Output); e.Test != "" && t != "" && !strings.HasPrefix(t, "---") && !strings.HasPrefix(t, "===") {
				lastOut[key] = t
			}
		case "pass":
			if e.Test != "" {
				passed++
			}
		case "fail":
			if e.Test != "" {
				failed++
			} else {
				failedPkgs = append(failedPkgs, e.Package)
			}
		case "skip":
			if e.Test != "" {
				skipped++
				skips = append(skips, fmt.Sprintf("  %s %s: %s", strings.TrimPrefix(e.Package, "github.com/imds-shim/imds-shim/"), e.Test, lastOut[key]))
			}
		}
	}
	sort.Strings(skips)
	if len(skips) > 0 {
		fmt.Println("\nskipped:")
		for _, s := range skips {
			fmt.Println(s)
		}
	}
	if len(failedPkgs) > 0 {
		fmt.Printf("\nfailed packages: %s\n", strings.Join(failedPkgs, " "))
	}
	fmt.Printf("go test: %d passed, %d failed, %d skipped\n", passed, failed, skipped)
	if failed > 0 || len(failedPkgs) > 0 {
		os.Exit(1)
	}
}
