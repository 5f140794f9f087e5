// Command testsummary reads `go test -json` on stdin, prints the ordinary
// test output, and ends with the tests that were skipped, with their
// reasons, and one closing count — so a CI log shows at a glance whether the
// root-only tests ran or skipped. It exits 1 when a test or package failed,
// or when a test named with -require did not pass.
//
//	-label NAME         the closing line starts with NAME instead of "go test"
//	-require T1,T2      these tests (top-level names) must pass; each is named as passed
//	-failures-only      print the output of failed tests and packages only
package main

import (
	"bufio"
	"encoding/json"
	"flag"
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
	label := flag.String("label", "go test", "the closing line's first word(s)")
	require := flag.String("require", "", "comma-separated top-level tests that must pass")
	failuresOnly := flag.Bool("failures-only", false, "print only the output of what failed")
	flag.Parse()
	// Output held back per test (and per package, under "") with
	// -failures-only, printed when it fails.
	held := map[string][]string{}
	passedTests := map[string]bool{}
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
			if *failuresOnly {
				held[key] = append(held[key], e.Output)
			} else {
				fmt.Print(e.Output)
			}
			if t := strings.TrimSpace(e.Output); e.Test != "" && t != "" && !strings.HasPrefix(t, "---") && !strings.HasPrefix(t, "===") {
				lastOut[key] = t
			}
		case "pass":
			if e.Test != "" {
				passed++
				passedTests[e.Test] = true
			}
			delete(held, key)
		case "fail":
			if e.Test != "" {
				failed++
			} else {
				failedPkgs = append(failedPkgs, e.Package)
			}
			fmt.Print(strings.Join(held[key], ""))
			delete(held, key)
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
	missing := false
	for _, name := range strings.Split(*require, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		if passedTests[name] {
			fmt.Printf("%s: %s passed\n", *label, name)
		} else {
			fmt.Printf("%s: %s did NOT pass (failed, skipped or not run)\n", *label, name)
			missing = true
		}
	}
	fmt.Printf("%s: %d passed, %d failed, %d skipped\n", *label, passed, failed, skipped)
	if failed > 0 || len(failedPkgs) > 0 || missing {
		os.Exit(1)
	}
}
