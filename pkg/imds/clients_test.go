package imds

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	awsimds "github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/imds-shim/imds-shim/pkg/credentials"
	"github.com/imds-shim/imds-shim/pkg/daemon"
)

// Real AWS clients, unmodified, fetch credentials (and region where the
// client reads it from IMDS) through the server on 127.0.0.1, pointed at it
// with AWS_EC2_METADATA_SERVICE_ENDPOINT, with no other AWS configuration.
// A missing client skips, unless CI is set: then it fails.

const clientRegion = "eu-west-1"

type clientServer struct {
	url   string
	creds credentials.Credentials
	src   *fakeSource
	obs   *recorder
}

func startClientServer(t *testing.T, mode TokenMode, n int) *clientServer {
	t.Helper()
	c := testCreds(n)
	c.AccessKeyID = fmt.Sprintf("ASIAIMDSSHIM%s%08d", strings.ToUpper(string(mode[:3])), time.Now().UnixNano()%1e8)
	c.LastUpdated = time.Now().Add(-time.Minute)
	c.Expires = time.Now().Add(time.Hour)
	src := &fakeSource{creds: c}
	obs := &recorder{}
	cfg := baseConfig()
	cfg.TokenMode = mode
	cfg.Region = clientRegion
	host := testHost
	srv, err := NewServer(cfg, src, Options{Observer: obs, Host: &host})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ln, err := Listen("tcp4", "127.0.0.1:0", 1)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	// The server the daemon runs the handler in.
	hs := daemon.NewHTTPServer(srv, daemon.APILimits, daemon.HTTPOptions{})
	done := make(chan struct{})
	go func() { defer close(done); _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		_ = hs.Close()
		<-done
	})
	return &clientServer{url: "http://" + ln.Addr().String(), creds: c, src: src, obs: obs}
}

// requireClient returns the client's path, or skips (fails under CI) when
// it is not installed or, with probe arguments, when running it with them
// (e.g. -c "import boto3") fails: a python3 without boto3 is no client.
func requireClient(t *testing.T, what, path string, probe ...string) string {
	t.Helper()
	p, err := exec.LookPath(path)
	if err == nil && len(probe) > 0 {
		cmd := exec.Command(p, probe...)
		cmd.Env = clientEnv(t, "http://127.0.0.1:1")
		var out []byte
		if out, err = cmd.CombinedOutput(); err != nil {
			err = fmt.Errorf("%s %s: %v: %s", p, strings.Join(probe, " "), err, bytes.TrimSpace(out))
		}
	}
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not available (%s: %v); .ci/run installs it", what, path, err)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// repoRoot is two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// clientEnv is an environment with no AWS configuration at all, so that
// IMDS is the only place credentials can come from.
func clientEnv(t *testing.T, endpoint string) []string {
	env := []string{
		"HOME=" + t.TempDir(),
		"PATH=" + os.Getenv("PATH"),
		"LANG=C.UTF-8",
		"AWS_CONFIG_FILE=/nonexistent",
		"AWS_SHARED_CREDENTIALS_FILE=/nonexistent",
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + endpoint,
		"AWS_PAGER=",
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PYENV_") {
			env = append(env, kv)
		}
	}
	// pyenv shims find their root through HOME unless told otherwise.
	if os.Getenv("PYENV_ROOT") == "" {
		if p, err := exec.LookPath("python3"); err == nil && strings.Contains(p, "/.pyenv/shims/") {
			env = append(env, "PYENV_ROOT="+filepath.Dir(filepath.Dir(p)))
		}
	}
	return env
}

func runClient(t *testing.T, env []string, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	t.Logf("%s %s: %v", filepath.Base(name), strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("%s %v: %v\nstderr:\n%s", name, args, err, stderr.String())
	}
	return out
}

// clientResult is what every client reports.
type clientResult struct {
	Method       string `json:"method"`
	AccessKeyID  string `json:"accessKeyId"`
	SecretLength int    `json:"secretLength"`
	SessionToken string `json:"sessionToken"`
	Region       string `json:"region"`
}

func checkResult(t *testing.T, s *clientServer, got clientResult, wantRegion bool) {
	t.Helper()
	if got.AccessKeyID != s.creds.AccessKeyID || got.SessionToken != s.creds.SessionToken ||
		got.SecretLength != len(s.creds.SecretAccessKey) {
		t.Errorf("client got key %q token %q secret length %d; want %q %q %d",
			got.AccessKeyID, got.SessionToken, got.SecretLength,
			s.creds.AccessKeyID, s.creds.SessionToken, len(s.creds.SecretAccessKey))
	}
	if wantRegion && got.Region != clientRegion {
		t.Errorf("client got region %q, want %q", got.Region, clientRegion)
	}
}

func TestRealClients(t *testing.T) {
	for i, mode := range []TokenMode{TokenRequired, TokenOptional} {
		t.Run(string(mode), func(t *testing.T) {
			s := startClientServer(t, mode, i+1)
			t.Run("aws-sdk-go-v2", func(t *testing.T) { goSDKClient(t, s) })
			t.Run("subprocess", func(t *testing.T) {
				t.Run("botocore", func(t *testing.T) {
					t.Parallel()
					py := requireClient(t, "python3 with boto3", "python3", "-c", "import boto3, botocore")
					out := runClient(t, clientEnv(t, s.url), py, filepath.Join(repoRoot(t), "test", "clients", "boto_imds.py"))
					var got clientResult
					if err := json.Unmarshal(out, &got); err != nil {
						t.Fatalf("decoding %q: %v", out, err)
					}
					if got.Method != "iam-role" {
						t.Errorf("credential method = %q, want iam-role", got.Method)
					}
					checkResult(t, s, got, true)
				})
				t.Run("aws-cli-v1", func(t *testing.T) {
					t.Parallel()
					aws := requireClient(t, "AWS CLI v1 (pip)", "aws", "--version")
					if r1, _ := filepath.EvalSymlinks(aws); r1 == "/usr/bin/aws" {
						msg := "aws on PATH is Debian's CLI v2, not the pip AWS CLI v1"
						if os.Getenv("CI") != "" {
							t.Fatal(msg)
						}
						t.Skip(msg)
					}
					cliV1Client(t, s, clientEnv(t, s.url), aws)
				})
				t.Run("aws-cli-v2", func(t *testing.T) {
					t.Parallel()
					aws := requireClient(t, "Debian AWS CLI v2 (apt awscli)", "/usr/bin/aws", "--version")
					// botocore in CLI v2 2.9 joins base and path without a
					// slash, so the endpoint needs a trailing one.
					cliClient(t, s, clientEnv(t, s.url+"/"), aws)
				})
				t.Run("aws-sdk-js-v3", func(t *testing.T) {
					t.Parallel()
					node := requireClient(t, "node", "node")
					dir := filepath.Join(repoRoot(t), "test", "js")
					if _, err := os.Stat(filepath.Join(dir, "node_modules", "@aws-sdk", "credential-providers")); err != nil {
						msg := "AWS SDK for JavaScript v3 not installed; run npm ci --prefix test/js"
						if os.Getenv("CI") != "" {
							t.Fatal(msg)
						}
						t.Skip(msg)
					}
					out := runClient(t, clientEnv(t, s.url), node, filepath.Join(dir, "imds-client.mjs"))
					var got clientResult
					if err := json.Unmarshal(out, &got); err != nil {
						t.Fatalf("decoding %q: %v", out, err)
					}
					checkResult(t, s, got, true)
				})
			})
			// Every client used IMDSv2 tokens; nothing was forbidden or
			// failed server-side.
			log := s.obs.String()
			if !strings.Contains(log, "token issued") {
				t.Errorf("no client fetched a token:\n%s", log)
			}
			for _, bad := range []string{"Forbidden", "Internal Server Error", "Bad Request", "Unauthorized"} {
				if strings.Contains(log, bad) {
					t.Errorf("server answered %s:\n%s", bad, log)
				}
			}
		})
	}
}

// cliClient runs `aws configure export-credentials`, which prints the
// credentials the CLI's chain resolved; with no configuration anywhere they
// can only have come from IMDS.
func cliClient(t *testing.T, s *clientServer, env []string, aws string) {
	out := runClient(t, env, aws, "configure", "export-credentials", "--format", "process")
	var got struct {
		AccessKeyID     string `json:"AccessKeyId"`
		SecretAccessKey string `json:"SecretAccessKey"`
		SessionToken    string `json:"SessionToken"`
		Expiration      string `json:"Expiration"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("decoding export-credentials output: %v", err)
	}
	checkResult(t, s, clientResult{AccessKeyID: got.AccessKeyID, SessionToken: got.SessionToken, SecretLength: len(got.SecretAccessKey)}, false)
	exp, err := time.Parse(time.RFC3339, got.Expiration)
	if err != nil || !exp.Equal(s.creds.Expires.Truncate(time.Second)) {
		t.Errorf("Expiration %q (%v), want %v", got.Expiration, err, s.creds.Expires.Truncate(time.Second).UTC())
	}
}

// cliV1Client runs `aws configure list`: CLI v1 has no export-credentials,
// but its list shows where the credentials came from (iam-role) and the
// last four characters of the access key, which are unique per server.
func cliV1Client(t *testing.T, s *clientServer, env []string, aws string) {
	out := string(runClient(t, env, aws, "configure", "list"))
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "access_key" {
			continue
		}
		want := "****************" + s.creds.AccessKeyID[len(s.creds.AccessKeyID)-4:]
		if f[1] != want || f[2] != "iam-role" {
			t.Errorf("access_key line %q, want value %s from iam-role", line, want)
		}
		return
	}
	t.Errorf("no access_key line in:\n%s", out)
}

// goSDKClient resolves the default config chain of aws-sdk-go-v2 with the
// IMDS region option, then uses the feature/ec2/imds client and the
// ec2rolecreds provider directly.
func goSDKClient(t *testing.T, s *clientServer) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "AWS_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	t.Setenv("HOME", t.TempDir())
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", s.url)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	cfg, err := config.LoadDefaultConfig(ctx, config.WithEC2IMDSRegion())
	if err != nil {
		t.Fatalf("LoadDefaultConfig: %v", err)
	}
	if cfg.Region != clientRegion {
		t.Errorf("region from IMDS = %q, want %q", cfg.Region, clientRegion)
	}
	c, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		t.Fatalf("default chain Retrieve: %v", err)
	}
	if c.Source != ec2rolecreds.ProviderName {
		t.Errorf("credential source = %q, want %q", c.Source, ec2rolecreds.ProviderName)
	}
	checkResult(t, s, clientResult{AccessKeyID: c.AccessKeyID, SessionToken: c.SessionToken, SecretLength: len(c.SecretAccessKey)}, false)
	// aws-sdk-go-v2 credentials v1.21.0 reads the legacy document only, so
	// c.AccountID stays empty; the extended path is covered by the golden
	// and table tests.

	client := awsimds.NewFromConfig(cfg)
	region, err := client.GetRegion(ctx, nil)
	if err != nil || region.Region != clientRegion {
		t.Errorf("GetRegion = %+v, %v", region, err)
	}
	doc, err := client.GetInstanceIdentityDocument(ctx, nil)
	if err != nil {
		t.Fatalf("GetInstanceIdentityDocument: %v", err)
	}
	if doc.AccountID != "123456789012" || doc.InstanceID != defaultInstanceID(testHost) ||
		doc.AvailabilityZone != clientRegion+"a" || !doc.PendingTime.Equal(testHost.BootTime) ||
		doc.PrivateIP != "10.20.30.40" || doc.Version != "2017-09-30" {
		t.Errorf("identity document = %+v", doc.InstanceIdentityDocument)
	}
	info, err := client.GetIAMInfo(ctx, nil)
	if err != nil {
		t.Fatalf("GetIAMInfo: %v", err)
	}
	if info.InstanceProfileArn != "arn:aws:iam::123456789012:instance-profile/test-role" || !strings.HasPrefix(info.InstanceProfileID, "AIPA") {
		t.Errorf("IAM info = %+v", info.IAMInfo)
	}
	az, err := client.GetMetadata(ctx, &awsimds.GetMetadataInput{Path: "placement/availability-zone"})
	if err != nil {
		t.Fatalf("GetMetadata: %v", err)
	}
	defer az.Content.Close()

	prov := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = client })
	c2, err := prov.Retrieve(ctx)
	if err != nil {
		t.Fatalf("ec2rolecreds Retrieve: %v", err)
	}
	if c2.AccessKeyID != s.creds.AccessKeyID || !c2.CanExpire || !c2.Expires.Equal(s.creds.Expires.Truncate(time.Second)) {
		t.Errorf("ec2rolecreds = key %q expires %v (can %v), want %q %v", c2.AccessKeyID, c2.Expires, c2.CanExpire,
			s.creds.AccessKeyID, s.creds.Expires.Truncate(time.Second))
	}
}

// With no valid credentials the server answers 500; aws-sdk-go-v2 retries
// (500 is retryable in its standard retryer) and then reports an error
// rather than credentials, and the observer learns why.
func TestGoSDKWithoutCredentials(t *testing.T) {
	s := startClientServer(t, TokenRequired, 1)
	s.src.set(credentials.Credentials{}, credentials.ErrNoCredentials)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := awsimds.New(awsimds.Options{Endpoint: s.url})
	_, err := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = client }).Retrieve(ctx)
	if err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("Retrieve = %v, want an error carrying the 500", err)
	}
	log := s.obs.String()
	if n := strings.Count(log, "unavailable: no valid credentials"); n != 3 {
		t.Errorf("observer saw %d unavailable events, want 3 (the SDK's attempts):\n%s", n, log)
	}
}

// botocore treats the 500 as "no credentials from IMDS": the chain ends
// with none instead of raising or using an error document.
func TestBotocoreWithoutCredentials(t *testing.T) {
	py := requireClient(t, "python3 with boto3", "python3", "-c", "import boto3, botocore")
	s := startClientServer(t, TokenRequired, 1)
	s.src.set(credentials.Credentials{}, credentials.ErrNoCredentials)
	out := runClient(t, clientEnv(t, s.url), py, "-c", "import boto3; print(boto3.Session().get_credentials())")
	if got := strings.TrimSpace(string(out)); got != "None" {
		t.Errorf("botocore credentials = %q, want None", got)
	}
	if !strings.Contains(s.obs.String(), "request credentials Internal Server Error") {
		t.Errorf("botocore never reached the credential document:\n%s", s.obs.String())
	}
}
