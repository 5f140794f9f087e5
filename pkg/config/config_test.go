package config

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const minimal = "role_arn: arn:aws:iam::123456789012:role/app\n"

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]any{
		"region": c.Region, "duration": c.Duration.D(), "listen": c.IMDS.Listen, "tokens": c.IMDS.Tokens,
		"hop": c.IMDS.HopLimit, "manage": c.ManageNetwork(), "link": c.Network.Link, "metrics": c.MetricsListen(),
		"reconcile": c.Network.ReconcileInterval.D(),
	}
	want := map[string]any{
		"region": "", "duration": time.Hour, "listen": "127.0.0.1:8254", "tokens": "required",
		"hop": 1, "manage": true, "link": "auto", "metrics": "127.0.0.1:9254", "reconcile": 10 * time.Second,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("defaults (-want +got):\n%s", d)
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
	if _, err := Parse([]byte(minimal + "duration: soon\n")); err == nil || !strings.Contains(err.Error(), `"soon" is not a duration`) {
		t.Errorf("bad duration error = %v", err)
	}
}

// TestErrors checks that each problem is reported, all at once, naming the key.
func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", []string{"role_arn: required"}},
		{"unknown key", minimal + "rol_arn: x\n", []string{`unknown key "rol_arn"`, "line 2"}},
		{"unknown nested key", minimal + "imds:\n  listn: x\n", []string{`unknown key "listn"`}},
		{"wrong type", minimal + "imds:\n  hop_limit: many\n", []string{"decoding", "many"}},
		{"two documents", minimal + "---\n" + minimal, []string{"more than one YAML document"}},
		{"many at once", `imds:
  listen: nowhere
  tokens: sometimes
  hop_limit: 65
  allowed_cidrs: [10.0.0.0/8, bogus]
network:
  backend: iptables
  link: "a/b"
  reconcile_interval: 1ms
metrics:
  listen: 127.0.0.1
log:
  level: loud
  format: xml
metadata:
  user_data: x
  user_data_file: /y
`, []string{
			"role_arn: required",
			`imds.listen: "nowhere" is not IP:PORT`,
			`imds.tokens: "sometimes" must be required or optional`,
			"imds.hop_limit: 65 is outside 1..64",
			`imds.allowed_cidrs[1]: "bogus" is not a CIDR prefix`,
			`network.backend: "iptables" must be auto, nft or legacy`,
			`network.link: "a/b" must be auto, dummy, lo or an interface name`,
			"network.reconcile_interval: 1ms is outside 1s..1h",
			`metrics.listen: "127.0.0.1" is not IP:PORT`,
			`log.level: "loud"`,
			`log.format: "xml"`,
			"metadata.user_data_file: set either",
		}},
		{"port zero", minimal + "imds:\n  listen: 127.0.0.1:0\n", []string{"imds.listen: port 0"}},
		{"same listeners", minimal + "imds:\n  listen: 127.0.0.1:9254\n", []string{"metrics.listen: must differ"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestLoadNamesFile(t *testing.T) {
	_, err := Load("/nonexistent/imds-shim.yaml")
	if err == nil || !strings.Contains(err.Error(), "reading config") {
		t.Errorf("Load missing file: %v", err)
	}
	p := t.TempDir() + "/c.yaml"
	if err := os.WriteFile(p, []byte("imds: {tokens: x}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("Load error does not name the file: %v", err)
	}
}

// TestExampleFile keeps the shipped example decodable with every key.
func TestExampleFile(t *testing.T) {
	c, err := Load("../../packaging/imds-shim.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.RoleARN == "" || c.IMDS.Listen != DefaultIMDSListen || c.MetricsListen() != DefaultMetricsListen {
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
			key := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if key == "-" {
				continue // not read from the file
			}
			if !regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(key) + `:`).Match(b) {
				t.Errorf("example lacks key %s%s", prefix, key)
			}
			if f.Type.Kind() == reflect.Struct {
				walk(prefix+key+".", f.Type)
			}
		}
	}
	walk("", reflect.TypeFor[Config]())
}
