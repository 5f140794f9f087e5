package awsarn

import (
	"bytes"
	"github.com/google/go-cmp/cmp"
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
		"arn:aws:iam::aws:policy/ReadOnlyAccess":                true,
		"arn:aws-cn:iam::123456789012:policy/team/x":            true,
		"arn:aws:iam::aws:role/ReadOnlyAccess":                  false,
		"arn:aws:iam::aws:policy/":                              false,
		"arn:aws:s3:::bucket-name-long-enough-for-the-length":   false,
		"arn:aws:iam::aws:policy/p/" + strings.Repeat("n", 128): true,
		"arn:aws:iam::aws:policy/p/" + strings.Repeat("n", 129): false,
	} {
		if err := CheckPolicy(s); (err == nil) != ok {
			t.Errorf("CheckPolicy(%q) = %v", s, err)
		}
	}
}

func TestParseRoleTable(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Role
		wantErr string
	}{
		{in: "arn:aws:iam::123456789012:role/test", want: Role{"aws", "123456789012", "/", "test"}},
		{in: "arn:aws-cn:iam::123456789012:role/a/b/Name_1+=,.@-", want: Role{"aws-cn", "123456789012", "/a/b/", "Name_1+=,.@-"}},
		{in: "arn:aws-us-gov:iam::123456789012:role/gov", want: Role{"aws-us-gov", "123456789012", "/", "gov"}},
		{in: "arn:aws-iso-b:iam::123456789012:role/x/y", want: Role{"aws-iso-b", "123456789012", "/x/", "y"}},
		{in: "arn:aws-eusc:iam::123456789012:role/eu", want: Role{"aws-eusc", "123456789012", "/", "eu"}},
		{in: "arn:aws:iam::12345678901:role/test", wantErr: `account "12345678901" is not 12 digits`},
		{in: "arn:aws:iam::123456789012:user/test", wantErr: `resource "user/test" does not start with role/`},
		{in: "arn:aws:sts::123456789012:role/test", wantErr: `service is "sts", want iam`},
		{in: "arn:aws:iam:us-east-1:123456789012:role/test", wantErr: `region is "us-east-1"`},
		{in: "arn:gcp:iam::123456789012:role/test", wantErr: `partition "gcp"`},
		{in: "arn:aws:iam::123456789012:role/", wantErr: `role name "" is not`},
		{in: "arn:aws:iam::123456789012:role/a//b", wantErr: `role path "/a//"`},
		{in: "arn:aws:iam::123456789012:role/" + strings.Repeat("n", 65), wantErr: "role name"},
		{in: "arn:aws:iam::123456789012:role/" + strings.Repeat("n", 64), want: Role{"aws", "123456789012", "/", strings.Repeat("n", 64)}},
		{in: "arn:aws:iam::123456789012:role/sp ace", wantErr: "role name"},
		{in: "arn:aws:iam::1:role", wantErr: "20 to 2048 characters"},
		{in: "not-an-arn-at-all-but-long", wantErr: "want arn:PARTITION"},
		{in: "arn:aws:iam::" + strings.Repeat("1", 2048), wantErr: "20 to 2048"},
	} {
		got, err := ParseRole(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseRole(%q) err = %v, want one containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseRole(%q): %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ParseRole(%q) (-want +got):\n%s", tc.in, diff)
		}
		if got.String() != tc.in {
			t.Errorf("String() = %q, want %q", got.String(), tc.in)
		}
	}
}
