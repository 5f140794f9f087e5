package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/imds-shim/imds-shim/pkg/config/awsarn"
)

const minimal = "role_arn: arn:aws:iam::123456789012:role/app\n"

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]any{
		"region": c.Region, "duration": c.Duration.D(), "listen": c.IMDS.Listen.String(), "tokens": c.IMDS.Tokens,
		"hop": c.IMDS.HopLimit, "manage": c.ManageNetwork(), "link": c.Network.Link, "metrics": c.MetricsListen(),
		"reconcile": c.Network.ReconcileInterval.D(), "ipv6": c.Network.IPv6, "unidentified": c.Unidentified,
		"root": c.Metadata.RootDeviceName, "role": c.RoleARN.Name,
	}
	want := map[string]any{
		"region": "", "duration": time.Hour, "listen": "169.254.169.254:254", "tokens": "required",
		"hop": 1, "manage": true, "link": "auto", "metrics": "127.0.0.1:9254", "reconcile": 10 * time.Second,
		"ipv6": "auto", "unidentified": "none", "root": "", "role": "app",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("defaults (-want +got):\n%s", d)
	}
	c, err = Parse([]byte(minimal + "network: {manage: false}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.IMDS.Listen != DefaultIMDSListenUnmanaged {
		t.Errorf("unmanaged default listen = %s", c.IMDS.Listen)
	}
}

func TestMetricsDisabled(t *testing.T) {
	c, err := Parse([]byte(minimal + "metrics:\n  listen: \"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.MetricsListen() != "" {
		t.Errorf("metrics listen = %q, want disabled", c.MetricsListen())
	}
}

func TestDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"1h": time.Hour, "900": 900 * time.Second, "90m": 90 * time.Minute} {
		c, err := Parse([]byte(minimal + "duration: " + in + "\n"))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if c.Duration.D() != want {
			t.Errorf("duration %q = %v, want %v", in, c.Duration.D(), want)
		}
	}
	// 36028797018967568 s wraps to exactly 1h in int64 nanoseconds.
	for _, in := range []string{"36028797018967568", "99999999999999999999", "9223372037", "-9223372037", "2562048h"} {
		_, err := Parse([]byte(minimal + "duration: " + in + "\n"))
		if got := keys(err); !slices.Equal(got, []string{"duration"}) {
			t.Errorf("duration %s: problems at %v, want [duration]: %v", in, got, err)
		}
	}
}

func keys(err error) []string {
	var e *Error
	if !errors.As(err, &e) {
		return nil
	}
	return e.Keys()
}

// TestErrors: each bad value is reported at its key path, and only there.
func TestErrors(t *testing.T) {
	const ta = "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/0f2b7e2a-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
	const pr = "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/0f2b7e2a-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
	ra := func(extra string) string {
		return "roles_anywhere:\n  certificate: /c.pem\n  private_key: /k.pem\n  trust_anchor_arn: " + ta +
			"\n  profile_arn: " + pr + "\n  role_arn: arn:aws:iam::123456789012:role/boot\n" + extra
	}
	many := func(key string, n int, item func(int) string) string {
		var b strings.Builder
		b.WriteString(key + ":\n")
		for i := range n {
			b.WriteString("  " + item(i) + "\n")
		}
		return b.String()
	}
	entry := "roles:\n  - role_arn: arn:aws:iam::123456789012:role/web\n    users: [www-data]\n"
	boot := "role_arn: arn:aws:iam::123456789012:role/boot\n" // roles_anywhere.role_arn, served directly
	tests := []struct {
		name, in string
		keys     []string
		msg      string // in the problem of keys[0]
	}{
		{"empty file", "", []string{"role_arn"}, "required"},
		{"not yaml", "a: [", []string{"(file)"}, "not YAML"},
		{"two documents", minimal + "---\n" + minimal, []string{"(file)"}, "more than one"},
		{"not a mapping", "- a\n", []string{"(file)"}, "mapping"},
		{"unknown key", minimal + "rol_arn: x\n", []string{"rol_arn"}, `line 2: unknown key "rol_arn"`},
		{"unknown nested key", minimal + "imds:\n  listn: x\n", []string{"imds.listn"}, "unknown key"},
		{"key twice", minimal + "region: us-east-1\nregion: us-east-2\n", []string{"region"}, "set twice"},
		{"wrong type", minimal + "imds:\n  hop_limit: many\n", []string{"imds.hop_limit"}, `"many" is not a whole number`},
		{"list for scalar", minimal + "region: [a]\n", []string{"region"}, "line 2"},
		{"role_arn", "role_arn: arn:aws:iam::123:role/x\n", []string{"role_arn"}, "12 digits"},
		{"role_arn partition", "role_arn: arn:aws-moon:iam::123456789012:role/x\n", []string{"role_arn"}, "aws-moon"},
		{"unidentified", minimal + "unidentified: maybe\n", []string{"unidentified"}, "none or default"},
		{"unidentified default without role", entry + "unidentified: default\n", []string{"unidentified"}, "not set"},
		{"region", minimal + "region: mars-1\n", []string{"region"}, "not a region"},
		{"region of other partition", minimal + "region: cn-north-1\n", []string{"role_arn"}, "partition aws"},
		{"sts_endpoint", minimal + "sts_endpoint: http://sts.example.com\n", []string{"sts_endpoint"}, "plain http"},
		{"sts_endpoint password", minimal + "sts_endpoint: https://u:hunter2@x/\n", []string{"sts_endpoint"}, "user info"},
		{"duration", minimal + "duration: 14m\n", []string{"duration"}, "15m..12h"},
		{"duration fraction", minimal + "duration: 1h0.5s\n", []string{"duration"}, "whole number"},
		{"duration word", minimal + "duration: soon\n", []string{"duration"}, `"soon" is not a duration`},
		{"session_name", minimal + "session_name: x\n", []string{"session_name"}, "2 to 64"},
		{"external_id", minimal + "external_id: has space\n", []string{"external_id"}, "2 to 1224"},
		{"policy", minimal + "policy: '{nope'\n", []string{"policy"}, "JSON"},
		{"policy_arns", minimal + "policy_arns: [arn:aws:iam::123456789012:role/notapolicy]\n", []string{"policy_arns[0]"}, "policy ARN"},
		{"policy_arns bound", minimal + many("policy_arns", 11, func(int) string { return "- arn:aws:iam::aws:policy/P" }), []string{"policy_arns"}, "at most 10"},
		{"tags", minimal + "tags: {aws:x: v}\n", []string{"tags"}, "aws:"},
		{"tags bound", minimal + many("tags", 51, func(i int) string { return fmt.Sprintf("k%d: v", i) }), []string{"tags"}, "at most 50"},
		{"transitive_tag_keys", minimal + "transitive_tag_keys: [missing]\n", []string{"transitive_tag_keys"}, "not a key of tags"},
		{"source_identity", minimal + "source_identity: aws:me\n", []string{"source_identity"}, "aws:"},
		{"profile", minimal + "profile: two words\n", []string{"profile"}, "spaces"},
		{"credentials_file", minimal + "credentials_file: rel\n", []string{"credentials_file"}, "absolute"},
		{"config_file", minimal + "config_file: rel\n", []string{"config_file"}, "absolute"},
		{"web_identity_token_file", minimal + "web_identity_token_file: rel\n", []string{"web_identity_token_file"}, "absolute"},
		{"web identity conflicts", minimal + "web_identity_token_file: /t\nexternal_id: ext-1\nprofile: p\n", []string{"external_id", "profile"}, "web_identity_token_file"},
		{"start_timeout", minimal + "start_timeout: 2m\n", []string{"start_timeout"}, "1s..1m20s"},
		{"stop_timeout", minimal + "stop_timeout: 0s\n", []string{"stop_timeout"}, "1s..25s"},
		{"imds.listen", minimal + "imds:\n  listen: nowhere\n", []string{"imds.listen"}, "IP:PORT"},
		{"imds.listen port 0", minimal + "imds:\n  listen: 127.0.0.1:0\n", []string{"imds.listen"}, "port 0"},
		{"imds.listen remote", minimal + "network: {manage: false}\nimds:\n  listen: 0.0.0.0:254\n", []string{"imds.listen"}, "allow_remote"},
		{"imds.listen ipv6 managed", minimal + "imds:\n  listen: '[::1]:254'\n", []string{"imds.listen"}, "IPv4"},
		{"imds.listen loop", minimal + "imds:\n  listen: 169.254.169.254:80\n", []string{"imds.listen"}, "loop"},
		{"imds.tokens", minimal + "imds: {tokens: sometimes}\n", []string{"imds.tokens"}, "required or optional"},
		{"imds.hop_limit", minimal + "imds: {hop_limit: 65}\n", []string{"imds.hop_limit"}, "1..64"},
		{"imds.allowed_cidrs", minimal + "imds: {allowed_cidrs: [10.0.0.0/8, bogus]}\n", []string{"imds.allowed_cidrs[1]"}, "CIDR"},
		{"imds.allowed_cidrs host bits", minimal + "imds: {allowed_cidrs: [10.0.0.1/8]}\n", []string{"imds.allowed_cidrs[0]"}, "10.0.0.0/8"},
		{"imds.allowed_cidrs bound", minimal + "imds:\n  " + strings.ReplaceAll(many("allowed_cidrs", 65, func(i int) string { return fmt.Sprintf("- 10.%d.0.0/16", i) }), "\n", "\n  "), []string{"imds.allowed_cidrs"}, "at most 64"},
		{"imds.metadata_dir", minimal + "imds: {metadata_dir: rel}\n", []string{"imds.metadata_dir"}, "absolute"},
		{"imds.allow_remote", minimal + "imds: {allow_remote: perhaps}\n", []string{"imds.allow_remote"}, "true or false"},
		{"imds.allow_unprivileged_port", minimal + "imds: {allow_unprivileged_port: 2}\n", []string{"imds.allow_unprivileged_port"}, "true or false"},
		{"metrics.listen", minimal + "metrics: {listen: 127.0.0.1}\n", []string{"metrics.listen"}, "IP:PORT"},
		{"metrics.listen remote", minimal + "metrics: {listen: '0.0.0.0:9254'}\n", []string{"metrics.listen"}, "allow_remote"},
		{"metrics.listen same", minimal + "imds: {listen: '127.0.0.1:254'}\nmetrics: {listen: '127.0.0.1:254'}\n", []string{"metrics.listen"}, "differ"},
		{"network.manage", minimal + "network: {manage: maybe}\n", []string{"network.manage"}, "true or false"},
		{"network.link", minimal + "network: {link: a/b}\n", []string{"network.link"}, "interface name"},
		{"network.link long", minimal + "network: {link: enx0123456789a}\n", []string{"network.link"}, "longer than 10"},
		{"network.backend", minimal + "network: {backend: iptables}\n", []string{"network.backend"}, "auto, nft or legacy"},
		{"network.reconcile_interval", minimal + "network: {reconcile_interval: 1ms}\n", []string{"network.reconcile_interval"}, "1s..1h"},
		{"network.containers", minimal + "network: {containers: [docker0, 'a b', docker0]}\n", []string{"network.containers[1]", "network.containers[2]"}, "character"},
		{"network.containers bound", minimal + "network:\n  " + strings.ReplaceAll(many("containers", 33, func(i int) string { return fmt.Sprintf("- br%d", i) }), "\n", "\n  "), []string{"network.containers"}, "at most 32"},
		{"network.containers with a loopback listener", minimal + "imds: {listen: 127.0.0.1:254}\nnetwork: {containers: [docker0]}\n", []string{"imds.listen"}, "containers"},
		{"network.containers lo", minimal + "network: {containers: [lo]}\n", []string{"network.containers[0]"}, "not a bridge"},
		{"network.ipv6", minimal + "network: {ipv6: sometimes}\n", []string{"network.ipv6"}, "auto, true or false"},
		{"log.level", minimal + "log: {level: loud}\n", []string{"log.level"}, "debug"},
		{"log.format", minimal + "log: {format: xml}\n", []string{"log.format"}, "text or json"},
		{"metadata.instance_id", minimal + "metadata: {instance_id: i-xyz}\n", []string{"metadata.instance_id"}, "hex"},
		{"metadata.ami_id", minimal + "metadata: {ami_id: ami-x}\n", []string{"metadata.ami_id"}, "hex"},
		{"metadata.instance_type", minimal + "metadata: {instance_type: 'a b'}\n", []string{"metadata.instance_type"}, "letters"},
		{"metadata.hostname", minimal + "metadata: {hostname: 'a b'}\n", []string{"metadata.hostname"}, "host name"},
		{"metadata.local_hostname", minimal + "metadata: {local_hostname: -x}\n", []string{"metadata.local_hostname"}, "host name"},
		{"metadata.local_ipv4", minimal + "metadata: {local_ipv4: '::1'}\n", []string{"metadata.local_ipv4"}, "IPv4"},
		{"metadata.local_ipv4 garbage", minimal + "metadata: {local_ipv4: x}\n", []string{"metadata.local_ipv4"}, "IP address"},
		{"metadata.mac", minimal + "metadata: {mac: zz}\n", []string{"metadata.mac"}, "MAC"},
		{"metadata.availability_zone", minimal + "region: us-east-1\nmetadata: {availability_zone: us-west-2a}\n", []string{"metadata.availability_zone"}, "us-east-1"},
		{"metadata.availability_zone_id", minimal + "metadata: {availability_zone_id: x}\n", []string{"metadata.availability_zone_id"}, "use1-az1"},
		{"metadata.domain", minimal + "metadata: {domain: 'A B'}\n", []string{"metadata.domain"}, "DNS"},
		{"metadata.architecture", minimal + "metadata: {architecture: sparc}\n", []string{"metadata.architecture"}, "x86_64"},
		{"metadata.instance_profile_arn", minimal + "metadata: {instance_profile_arn: arn:aws:iam::123456789012:role/x}\n", []string{"metadata.instance_profile_arn"}, "instance profile"},
		{"metadata.user_data_file", minimal + "metadata: {user_data: x, user_data_file: /y}\n", []string{"metadata.user_data_file"}, "not both"},
		{"metadata.user_data", minimal + "metadata: {user_data: " + strings.Repeat("x", MaxUserData+1) + "}\n", []string{"metadata.user_data"}, "16 KiB"},
		{"metadata.tags", minimal + "metadata: {tags: {a/b: x}}\n", []string{"metadata.tags"}, "'/'"},
		{"metadata.tags bound", minimal + "metadata:\n  " + strings.ReplaceAll(many("tags", 51, func(i int) string { return fmt.Sprintf("k%d: v", i) }), "\n", "\n  "), []string{"metadata.tags"}, "at most 50"},
		{"metadata.public_keys", minimal + "metadata: {public_keys: {me: 'not a key'}}\n", []string{"metadata.public_keys"}, "OpenSSH"},
		{"metadata.public_keys name", minimal + "metadata: {public_keys: {'a/b': 'ssh-ed25519 AAAAC3Nz me'}}\n", []string{"metadata.public_keys"}, "name"},
		{"metadata.public_keys name with =", minimal + "metadata: {public_keys: {'a=b': 'ssh-ed25519 AAAAC3Nz me'}}\n", []string{"metadata.public_keys"}, "0=name"},
		{"metadata.reservation_id", minimal + "metadata: {reservation_id: r-x}\n", []string{"metadata.reservation_id"}, "hex"},
		{"metadata.security_groups", minimal + "metadata: {security_groups: ['a/b']}\n", []string{"metadata.security_groups[0]"}, "security group"},
		{"metadata.root_device_name", minimal + "metadata: {root_device_name: sda}\n", []string{"metadata.root_device_name"}, "/dev/"},
		{"roles role_arn", "roles:\n  - users: [a]\n  - role_arn: x\n    users: [b]\n", []string{"roles[0].role_arn", "roles[1].role_arn"}, "required"},
		{"roles no matcher", "roles:\n  - role_arn: arn:aws:iam::123456789012:role/a\n", []string{"roles[0]"}, "no matcher"},
		{"roles units", entry + "  - role_arn: arn:aws:iam::123456789012:role/b\n    units: [backup, x.service]\n", []string{"roles[1].units[0]"}, "unit name"},
		{"roles users", entry + "  - role_arn: arn:aws:iam::123456789012:role/b\n    users: ['Bad User']\n", []string{"roles[1].users[0]"}, "user name"},
		{"roles groups", entry + "  - role_arn: arn:aws:iam::123456789012:role/b\n    groups: ['-x']\n", []string{"roles[1].groups[0]"}, "group name"},
		{"roles sources", entry + "  - role_arn: arn:aws:iam::123456789012:role/b\n    sources: [172.17.0.0]\n", []string{"roles[1].sources[0]"}, "CIDR"},
		{"roles unknown key", entry + "    user: [x]\n", []string{"roles[0].user"}, "unknown key"},
		{"roles duration", entry + "    duration: 1m\n", []string{"roles[0].duration"}, "15m..12h"},
		{"roles tags", entry + "    tags: {aws:x: y}\n", []string{"roles[0].tags"}, "aws:"},
		{"roles max_caller_sessions", entry + "    max_caller_sessions: 1025\n", []string{"roles[0].max_caller_sessions"}, "1..1024"},
		{"roles caller_source_identity", entry + "    caller_source_identity: true\n    source_identity: me-too\n", []string{"roles[0].caller_source_identity"}, "source_identity"},
		{"roles name collision", minimal + "roles:\n  - role_arn: arn:aws:iam::210987654321:role/app\n    users: [a]\n", []string{"roles[0].role_arn"}, `"app"`},
		{"roles bound", many("roles", 101, func(i int) string {
			return fmt.Sprintf("- {role_arn: 'arn:aws:iam::123456789012:role/r%d', users: [u]}", i)
		}), []string{"roles"}, "at most 100"},
		{"roles_anywhere missing", "roles_anywhere: {}\n" + minimal, []string{"roles_anywhere.certificate", "roles_anywhere.private_key", "roles_anywhere.trust_anchor_arn", "roles_anywhere.profile_arn", "roles_anywhere.role_arn"}, "required"},
		{"roles_anywhere paths", minimal + strings.Replace(ra(""), "/k.pem", "k.pem", 1), []string{"roles_anywhere.private_key"}, "absolute"},
		{"roles_anywhere trust anchor", minimal + strings.Replace(ra(""), "trust-anchor/", "profile/", 1), []string{"roles_anywhere.trust_anchor_arn"}, "trust-anchor/"},
		{"roles_anywhere profile region", minimal + strings.Replace(ra(""), "eu-west-1:123456789012:profile", "eu-west-2:123456789012:profile", 1), []string{"roles_anywhere.profile_arn"}, "trust anchor"},
		{"roles_anywhere exclusive", minimal + "credentials_file: /c\n" + ra(""), []string{"roles_anywhere"}, "credentials_file"},
		{"roles_anywhere endpoint", minimal + ra("  endpoint: ftp://x\n"), []string{"roles_anywhere.endpoint"}, "http"},
		{"roles_anywhere duration", minimal + ra("  duration: 13h\n"), []string{"roles_anywhere.duration"}, "15m..12h"},
		{"roles_anywhere endpoint path", minimal + ra("  endpoint: https://ra.example.com/v1\n"), []string{"roles_anywhere.endpoint"}, "must not have a path"},
		{"roles_anywhere chained duration", minimal + "duration: 2h\n" + ra(""), []string{"duration"}, "role chaining"},
		{"roles_anywhere chained entry inherits duration", boot + "duration: 2h\n" + ra("") + "roles:\n  - {role_arn: 'arn:aws:iam::123456789012:role/web', users: [www-data]}\n",
			[]string{"roles[0].duration"}, "inherited from the top-level duration"},
		{"roles_anywhere direct takes no options", boot + ra("") + "policy: '{}'\npolicy_arns: ['arn:aws:iam::aws:policy/ReadOnlyAccess']\n" +
			"tags: {team: a}\ntransitive_tag_keys: [team]\nexternal_id: ext-1\nsource_identity: me-1\n",
			[]string{"policy", "policy_arns", "tags", "transitive_tag_keys", "external_id", "source_identity"}, "served from CreateSession directly"},
		{"roles_anywhere direct entry inherits tags", minimal + "tags: {team: a}\n" + ra("") + "roles:\n  - {role_arn: 'arn:aws:iam::123456789012:role/boot', users: [www-data]}\n",
			[]string{"roles[0].tags"}, "inherited from the top-level tags"},
		{"roles_anywhere direct entry caller_source_identity", minimal + ra("") + "roles:\n  - {role_arn: 'arn:aws:iam::123456789012:role/boot', users: [www-data], caller_source_identity: true}\n",
			[]string{"roles[0].caller_source_identity"}, "no source identity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if d := cmp.Diff(tt.keys, keys(err), cmpopts.SortSlices(func(a, b string) bool { return a < b })); d != "" {
				t.Fatalf("problem keys (-want +got):\n%s\n%v", d, err)
			}
			var e *Error
			errors.As(err, &e)
			for _, p := range e.Problems {
				if p.Key == tt.keys[0] && !strings.Contains(p.Msg, tt.msg) {
					t.Errorf("%s: %q lacks %q", p.Key, p.Msg, tt.msg)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error repeats a password: %v", err)
			}
		})
	}
}

// TestEveryProblemOnce: unknown keys do not hide other problems, and every
// key is named once.
func TestEveryProblemOnce(t *testing.T) {
	in := `role_arn: arn:aws:iam::123456789012:user/bob
colour: blue
imds:
  listen: nowhere
  tokens: sometimes
  tokens_typo: x
network:
  link: "a/b"
tags: {aws:a: x, aws:b: y}
`
	_, err := Parse([]byte(in))
	want := []string{"role_arn", "colour", "imds.listen", "imds.tokens", "imds.tokens_typo", "network.link", "tags"}
	got := keys(err)
	slices.Sort(got)
	slices.Sort(want)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("keys (-want +got):\n%s\n%v", d, err)
	}
}

func TestEUSC(t *testing.T) {
	c, err := Parse([]byte("role_arn: arn:aws-eusc:iam::123456789012:role/app\nregion: eusc-de-east-1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.RoleARN.Partition != "aws-eusc" || c.Region != "eusc-de-east-1" {
		t.Errorf("decoded %+v", c)
	}
}

// TestEveryPartitionRegion is driven by the SDK's endpoint data: a role in
// each partition with each of its regions is accepted, and with a region of
// another partition refused.
func TestEveryPartitionRegion(t *testing.T) {
	ps := awsarn.Partitions()
	n := 0
	for _, p := range ps {
		for _, r := range p.Regions {
			n++
			in := fmt.Sprintf("role_arn: arn:%s:iam::123456789012:role/app\nregion: %s\n", p.ID, r)
			if _, err := Parse([]byte(in)); err != nil {
				t.Errorf("%s/%s: %v", p.ID, r, err)
			}
			for _, q := range ps {
				if q.ID == p.ID {
					continue
				}
				in := fmt.Sprintf("role_arn: arn:%s:iam::123456789012:role/app\nregion: %s\n", q.ID, r)
				if got := keys(func() error { _, err := Parse([]byte(in)); return err }()); !slices.Equal(got, []string{"role_arn"}) {
					t.Errorf("role in %s with region %s of %s: problems %v", q.ID, r, p.ID, got)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no regions in the SDK data")
	}
}

func TestRolesModel(t *testing.T) {
	in := `
duration: 2h
external_id: ext-1
tags: {team: blue}
unidentified: default
role_arn: arn:aws:iam::123456789012:role/host
roles:
  - role_arn: arn:aws:iam::123456789012:role/backup
    units: [backup.service, app@1.service, system-batch.slice]
  - role_arn: arn:aws:iam::123456789012:role/web
    users: [www-data, "1001", 1002]
    groups: [web]
    duration: 30m
    caller_source_identity: true
    max_caller_sessions: 8
  - role_arn: arn:aws:iam::123456789012:role/path/web
    sources: [172.17.0.0/16, "fd00::/64"]
network:
  containers: [docker0, podman0]
  ipv6: false
`
	_, err := Parse([]byte(in))
	if got := keys(err); !slices.Equal(got, []string{"roles[2].role_arn"}) {
		t.Fatalf("two ARNs named web: problems %v", err)
	}
	c, err := Parse([]byte(strings.Replace(in, "role/path/web", "role/ci", 1)))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Roles
	if c.Unidentified != "default" || len(r) != 3 || c.Network.IPv6 != "false" || len(c.Network.Containers) != 2 {
		t.Fatalf("decoded %+v", c)
	}
	if r[0].Duration.D() != 2*time.Hour || r[0].ExternalID != "ext-1" || r[0].Tags["team"] != "blue" || r[0].MaxCallerSessions != DefaultMaxCallerSessions {
		t.Errorf("entry 0 does not inherit: %+v", r[0])
	}
	if r[1].Duration.D() != 30*time.Minute || !r[1].CallerSourceIdentity || r[1].MaxCallerSessions != 8 || !slices.Equal(r[1].Users, []string{"www-data", "1001", "1002"}) {
		t.Errorf("entry 1: %+v", r[1])
	}
	if r[2].Sources[1] != netip.MustParsePrefix("fd00::/64") || r[2].RoleARN.Name != "ci" {
		t.Errorf("entry 2: %+v", r[2])
	}
	// A roles list makes the top-level role optional.
	if _, err := Parse([]byte("roles:\n  - {role_arn: 'arn:aws:iam::123456789012:role/a', units: [a.service]}\n")); err != nil {
		t.Errorf("roles without role_arn: %v", err)
	}
	// The same role in two entries is the same name: fine.
	if _, err := Parse([]byte(minimal + "roles:\n  - {role_arn: 'arn:aws:iam::123456789012:role/app', units: [a.service]}\n")); err != nil {
		t.Errorf("same role twice: %v", err)
	}
}

func TestRolesAnywhereModel(t *testing.T) {
	in := `roles_anywhere:
  certificate: /etc/imds-shim/host.pem
  private_key: /etc/imds-shim/host.key
  trust_anchor_arn: arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/0f2b7e2a-1c3d-4e5f-8a9b-0c1d2e3f4a5b
  profile_arn: arn:aws:rolesanywhere:eu-west-1:123456789012:profile/1f2b7e2a-1c3d-4e5f-8a9b-0c1d2e3f4a5b
  role_arn: arn:aws:iam::123456789012:role/host-bootstrap
role_arn: arn:aws:iam::123456789012:role/host-bootstrap
duration: 3h
`
	c, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	ra := c.RolesAnywhere
	if ra.Region() != "eu-west-1" || ra.RoleARN.Name != "host-bootstrap" || ra.Duration.D() != 3*time.Hour || ra.ProfileARN.Kind != awsarn.Profile {
		t.Errorf("decoded %+v", ra)
	}
	// A chained entry that sets its own duration within 1h, beside the
	// directly served top-level role of 3h, and a directly served entry
	// that empties the options it would inherit: valid.
	ok := in + `tags: {team: a}
roles:
  - {role_arn: 'arn:aws:iam::123456789012:role/web', users: [www-data], duration: 1h, tags: {team: b}}
  - {role_arn: 'arn:aws:iam::123456789012:role/host-bootstrap', users: [backup], tags: {}}
`
	if _, err := Parse([]byte(ok)); err == nil || !strings.Contains(err.Error(), "tags:") {
		// the top-level role is the direct one: its own tags are refused
		t.Errorf("top-level tags on the direct role: %v", err)
	}
	ok = strings.Replace(ok, "tags: {team: a}\n", "", 1)
	if _, err := Parse([]byte(ok)); err != nil {
		t.Errorf("valid mix of chained and direct roles: %v", err)
	}
}

func TestWarnings(t *testing.T) {
	c, err := Parse([]byte(minimal + "network: {manage: false}\nimds: {listen: '127.0.0.1:8254'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if w := c.Warnings(); len(w) != 1 || w[0].Key != "imds.listen" || !strings.Contains(w[0].Msg, "unprivileged") {
		t.Errorf("warnings %v", w)
	}
	c, err = Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("default config warns: %v", w)
	}
	c, err = Parse([]byte(minimal + "network: {manage: false}\nimds: {listen: '0.0.0.0:254', allow_remote: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if w := c.Warnings(); len(w) != 1 || !strings.Contains(w[0].Msg, "reachable by any host") {
		t.Errorf("remote listener warnings %v", w)
	}
}

// TestRolesAnywhereSessionNameWarning: a session name set for the directly
// served role is valid but unused; saying so beats a silent surprise in
// CloudTrail.
func TestRolesAnywhereSessionNameWarning(t *testing.T) {
	const ra = `roles_anywhere:
  certificate: /etc/imds-shim/host.pem
  private_key: /etc/imds-shim/host.key
  trust_anchor_arn: arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/0f2b7e2a-1c3d-4e5f-8a9b-0c1d2e3f4a5b
  profile_arn: arn:aws:rolesanywhere:eu-west-1:123456789012:profile/0f2b7e2a-1c3d-4e5f-8a9b-0c1d2e3f4a5b
  role_arn: arn:aws:iam::123456789012:role/boot
network: {manage: false}
`
	for _, tc := range []struct {
		in   string
		keys []string
	}{
		{"role_arn: arn:aws:iam::123456789012:role/boot\n" + ra, nil},
		{"role_arn: arn:aws:iam::123456789012:role/boot\nsession_name: host-a\n" + ra, []string{"session_name"}},
		{"role_arn: arn:aws:iam::123456789012:role/app\nsession_name: host-a\n" + ra, nil},
		{"role_arn: arn:aws:iam::123456789012:role/app\nsession_name: host-a\n" + ra +
			"roles:\n  - {role_arn: 'arn:aws:iam::123456789012:role/boot', users: [a], session_name: boot-a}\n" +
			"  - {role_arn: 'arn:aws:iam::123456789012:role/boot', users: [b]}\n", []string{"roles[0].session_name"}},
	} {
		c, err := Parse([]byte(tc.in))
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, w := range c.Warnings() {
			keys = append(keys, w.Key)
		}
		if d := cmp.Diff(tc.keys, keys); d != "" {
			t.Errorf("warnings (-want +got):\n%s\n%s", d, tc.in)
		}
	}
}

func TestFileWarnings(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "credentials")
	key := filepath.Join(dir, "host.key")
	cfg := filepath.Join(dir, "c.yaml")
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{creds, 0o644}, {key, 0o600}, {cfg, 0o600}} {
		if err := os.WriteFile(f.path, []byte("x"), f.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(f.path, f.mode) // whatever the umask
	}
	c, err := Parse([]byte(minimal + "credentials_file: " + creds + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	ws := c.FileWarnings(cfg)
	if os.Getuid() != 0 {
		t.Skipf("not root: every file is someone else's: %v", ws)
	}
	if len(ws) != 1 || !strings.Contains(ws[0], creds) || !strings.Contains(ws[0], "0644") || !strings.Contains(ws[0], "credentials_file") {
		t.Errorf("warnings = %q, want one naming %s and 0644", ws, creds)
	}
	os.Chmod(creds, 0o600)
	if ws := c.FileWarnings(cfg); len(ws) != 0 {
		t.Errorf("0600 files warn: %q", ws)
	}
	os.Chmod(cfg, 0o620)
	if ws := c.FileWarnings(cfg); len(ws) != 1 || !strings.Contains(ws[0], "config file "+cfg) || !strings.Contains(ws[0], "writable by other users") {
		t.Errorf("group-writable config: %q", ws)
	}
	os.Chmod(cfg, 0o600)
	// The Roles Anywhere private key is a secret file too.
	c, err = Parse([]byte(`role_arn: arn:aws:iam::123456789012:role/boot
roles_anywhere:
  certificate: /etc/imds-shim/host.pem
  private_key: ` + key + `
  trust_anchor_arn: arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/0f2b7e2a-1c3d-4e5f-8a9b-0c1d2e3f4a5b
  profile_arn: arn:aws:rolesanywhere:eu-west-1:123456789012:profile/0f2b7e2a-1c3d-4e5f-8a9b-0c1d2e3f4a5b
  role_arn: arn:aws:iam::123456789012:role/boot
`))
	if err != nil {
		t.Fatal(err)
	}
	if ws := c.FileWarnings(cfg); len(ws) != 0 {
		t.Errorf("0600 key warns: %q", ws)
	}
	os.Chmod(key, 0o640)
	if ws := c.FileWarnings(cfg); len(ws) != 1 || !strings.Contains(ws[0], "roles_anywhere.private_key "+key) || !strings.Contains(ws[0], "readable by other users") {
		t.Errorf("group-readable private key: %q", ws)
	}
}

func TestLoad(t *testing.T) {
	_, err := Load("/nonexistent/imds-shim.yaml")
	if err == nil || !strings.Contains(err.Error(), "reading config") {
		t.Errorf("Load missing file: %v", err)
	}
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte("imds: {tokens: x}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("Load error does not name the file: %v", err)
	}
	if err := os.WriteFile(p, []byte(minimal+"# "+strings.Repeat("x", MaxFileBytes)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load of a huge file: %v", err)
	}
}

// TestExampleFile keeps the shipped example valid.
func TestExampleFile(t *testing.T) {
	c, err := Load("../../packaging/imds-shim.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.RoleARN.IsZero() || c.IMDS.Listen != DefaultIMDSListenManaged || c.Metrics.Listen != DefaultMetricsListen {
		t.Errorf("example file decoded oddly: %+v", c)
	}
}

// TestExampleHasEveryKey keeps the example complete as keys are added.
func TestExampleHasEveryKey(t *testing.T) {
	b, err := os.ReadFile("../../packaging/imds-shim.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			key, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if key == "-" {
				continue // not read from the file
			}
			ft := f.Type
			if opts == "inline" {
				walk(prefix, ft)
				continue
			}
			if !regexp.MustCompile(`(?m)^[\s#-]*` + regexp.QuoteMeta(key) + `:`).Match(b) {
				t.Errorf("example lacks key %s%s", prefix, key)
			}
			if ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft.PkgPath() == reflect.TypeFor[Config]().PkgPath() {
				walk(prefix+key+".", ft)
			}
		}
	}
	walk("", reflect.TypeFor[Config]())
}

// TestContainersNeedAllowedSources: network.containers lets containers
// connect; with no range allowed they would all get 403, which check says.
func TestContainersNeedAllowedSources(t *testing.T) {
	for _, tt := range []struct {
		extra string
		warn  bool
	}{
		{"network: {containers: [docker0]}\n", true},
		{"network: {containers: [docker0]}\nimds: {allowed_cidrs: [172.17.0.0/16]}\n", false},
		{"", false},
	} {
		c, err := Parse([]byte(minimal + tt.extra))
		if err != nil {
			t.Fatalf("%q: %v", tt.extra, err)
		}
		var got bool
		for _, w := range c.Warnings() {
			if w.Key == "imds.allowed_cidrs" && strings.Contains(w.Msg, "containers on docker0 can connect") {
				got = true
			}
		}
		if got != tt.warn {
			t.Errorf("%q: warning %t, want %t (%v)", tt.extra, got, tt.warn, c.Warnings())
		}
	}
}

// A roles[].sources range is served without being repeated in
// imds.allowed_cidrs: the handler's allowlist is both, each range once.
func TestServedSources(t *testing.T) {
	c, err := Parse([]byte(minimal + `imds: {allowed_cidrs: [10.1.0.0/16, 172.17.0.0/16]}
roles:
  - role_arn: arn:aws:iam::123456789012:role/ci
    sources: [172.17.0.0/16, 10.77.0.0/24]
  - role_arn: arn:aws:iam::123456789012:role/web
    users: [root]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("172.17.0.0/16"), netip.MustParsePrefix("10.77.0.0/24")}
	if got := c.ServedSources(); !slices.Equal(got, want) {
		t.Errorf("ServedSources() = %v, want %v", got, want)
	}
}

// Length limits checked apart from the character rules: the longest value
// is accepted, one byte more is refused, by its key.
func TestLengthLimits(t *testing.T) {
	label := func(n int) string { return strings.Repeat("a", n) }
	for _, tc := range []struct {
		key string
		val func(n int) string
		max int
	}{
		{"metadata.hostname", label, 253},
		{"metadata.local_hostname", label, 253},
		{"metadata.domain", label, 253},
		{"metadata.instance_type", func(n int) string { return "m" + strings.Repeat("5", n-1) }, 64},
		{"metadata.root_device_name", func(n int) string { return "/dev/x" + strings.Repeat("1", n-6) }, 36},
		{"metadata.availability_zone_id", func(n int) string { return strings.Repeat("u", n-5) + "-az12" }, 17},
	} {
		for _, n := range []int{tc.max, tc.max + 1} {
			sect, k, _ := strings.Cut(tc.key, ".")
			in := minimal + sect + ":\n  " + k + ": '" + tc.val(n) + "'\n"
			_, err := Parse([]byte(in))
			if len(tc.val(n)) != n {
				t.Fatalf("%s: test value of %d bytes has %d", tc.key, n, len(tc.val(n)))
			}
			if got, want := keys(err), []string(nil); n > tc.max {
				want = []string{tc.key}
				if !slices.Equal(got, want) {
					t.Errorf("%s of %d bytes: problem keys %v, want %v (%v)", tc.key, n, got, want, err)
				}
			} else if len(got) != 0 {
				t.Errorf("%s of %d bytes (the limit): refused: %v", tc.key, n, err)
			}
		}
	}
	for _, n := range []int{255, 256} {
		in := minimal + "metadata:\n  public_keys:\n    '" + strings.Repeat("k", n) + "': 'ssh-ed25519 AAAAC3Nz me'\n"
		_, err := Parse([]byte(in))
		if refused := len(keys(err)) > 0; refused != (n > 255) {
			t.Errorf("public key name of %d bytes: refused %v: %v", n, refused, err)
		}
	}
}
