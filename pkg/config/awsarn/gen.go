//go:build ignore

// gen copies the partition table the AWS SDK for Go v2 resolves endpoints
// from (internal/endpoints/awsrulesfn/partitions.json, internal to the SDK
// module and so not importable) into this package. Run by go generate;
// TestPartitionsMatchSDK fails when the copy and the module's file differ.
package main

import (
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

func main() {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/aws/aws-sdk-go-v2").Output()
	if err != nil {
		log.Fatal(err)
	}
	src := filepath.Join(strings.TrimSpace(string(out)), "internal", "endpoints", "awsrulesfn", "partitions.json")
	b, err := os.ReadFile(src)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile("partitions.json", b, 0o644); err != nil {
		log.Fatal(err)
	}
}
