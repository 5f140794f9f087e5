package awsarn

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPartitionsMatchSDK keeps the embedded copy equal to the SDK module's
// own file (go generate refreshes it after an SDK upgrade).
func TestPartitionsMatchSDK(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/aws/aws-sdk-go-v2").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	src := filepath.Join(strings.TrimSpace(string(out)), "internal", "endpoints", "awsrulesfn", "partitions.json")
	want, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, partitionsJSON) {
		t.Errorf("partitions.json differs from %s; run go generate ./pkg/config/awsarn", src)
	}
}

// TestEveryPartitionRegion is driven by the SDK's data: every region of every
// partition belongs to that partition and to no other, and a role ARN in
// every partition parses.
func TestEveryPartitionRegion(t *testing.T) {
	ps := Partitions()
	if len(ps) < 2 {
		t.Fatalf("only %d partitions in the SDK data", len(ps))
	}
	n := 0
	for _, p := range ps {
		if p.DNSSuffix == "" || !p.HasRegion(p.DefaultRegion) {
			t.Errorf("partition %s: suffix %q, default region %q not its own", p.ID, p.DNSSuffix, p.DefaultRegion)
		}
		r, err := ParseRole("arn:" + p.ID + ":iam::123456789012:role/app")
		if err != nil || r.Partition != p.ID {
			t.Errorf("role in %s: %+v, %v", p.ID, r, err)
		}
		for _, region := range p.Regions {
			n++
			got, ok := PartitionOfRegion(region)
			if !ok || got.ID != p.ID {
				t.Errorf("PartitionOfRegion(%s) = %s, %t; want %s", region, got.ID, ok, p.ID)
			}
			for _, q := range ps {
				if q.ID != p.ID && q.HasRegion(region) {
					t.Errorf("region %s of %s also claimed by %s", region, p.ID, q.ID)
				}
			}
		}
	}
	t.Logf("%d partitions, %d regions", len(ps), n)
}

func TestParseRole(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "arn:aws-eusc:iam::123456789012:role/app", want: "app"},
		{in: "arn:aws:iam::123456789012:role/a/b/deploy", want: "deploy"},
		{in: "arn:aws:iam::123456789012:role/", err: "role name"},
		{in: "arn:aws:iam::12345:role/app", err: "12 digits"},
		{in: "arn:aws:sts::123456789012:role/app", err: "want iam"},
		{in: "arn:aws:iam:us-east-1:123456789012:role/app", err: "IAM is global"},
		{in: "arn:aws-moon:iam::123456789012:role/app", err: `partition "aws-moon"`},
		{in: "arn:aws:iam::123456789012:user/app", err: "role/"},
		{in: "not-an-arn-at-all-at-all", err: "want arn:"},
	} {
		r, err := ParseRole(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseRole(%q) = %v, want error with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || r.Name != tc.want || r.String() != tc.in {
			t.Errorf("ParseRole(%q) = %+v, %v", tc.in, r, err)
		}
	}
}

func TestParseRolesAnywhere(t *testing.T) {
	const id = "0f2b7e2a-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
	a, err := ParseRolesAnywhere("arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/"+id, TrustAnchor)
	if err != nil || a.Region != "eu-west-1" || a.ID != id {
		t.Errorf("trust anchor: %+v, %v", a, err)
	}
	for _, bad := range []string{
		"arn:aws:rolesanywhere:eu-west-1:123456789012:profile/" + id,         // wrong kind
		"arn:aws:rolesanywhere:cn-north-1:123456789012:trust-anchor/" + id,   // region of another partition
		"arn:aws:iam:eu-west-1:123456789012:trust-anchor/" + id,              // service
		"arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/not-uuid", // id
	} {
		if _, err := ParseRolesAnywhere(bad, TrustAnchor); err == nil {
			t.Errorf("ParseRolesAnywhere(%q) accepted", bad)
		}
	}
}

func TestCheckPolicy(t *testing.T) {
	for s, ok := range map[string]bool{
		"arn:aws:iam::aws:policy/ReadOnlyAccess":              true,
		"arn:aws-cn:iam::123456789012:policy/team/x":          true,
		"arn:aws:iam::aws:role/ReadOnlyAccess":                false,
		"arn:aws:iam::aws:policy/":                            false,
		"arn:aws:s3:::bucket-name-long-enough-for-the-length": false,
	} {
		if err := CheckPolicy(s); (err == nil) != ok {
			t.Errorf("CheckPolicy(%q) = %v", s, err)
		}
	}
}
