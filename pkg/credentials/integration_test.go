package credentials

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/google/go-cmp/cmp"

	"github.com/imds-shim/imds-shim/pkg/internal/moto"
	"github.com/imds-shim/imds-shim/pkg/internal/syncbuf"
)

var (
	motoOnce sync.Once
	motoProc *moto.Process
	motoErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if motoProc != nil {
		motoProc.Stop()
	}
	os.Exit(code)
}

// motoURL returns the package's shared moto server (started on first use,
// stopped by TestMain), skipping the test when moto is missing outside CI.
func motoURL(t *testing.T) string {
	t.Helper()
	motoOnce.Do(func() { motoProc, motoErr = moto.StartProcess(context.Background(), "127.0.0.1", nil) })
	if motoErr != nil {
		if errors.Is(motoErr, moto.ErrUnavailable) && os.Getenv("CI") == "" {
			t.Skipf("skipping: %v", motoErr)
		}
		t.Fatalf("starting moto: %v", motoErr)
	}
	return motoProc.URL
}

// isolateAWSEnv removes every AWS_* variable for the test (t.Setenv restores
// them) and points HOME and the default shared files at an empty directory,
// so neither the machine's ~/.aws nor another test's settings leak in.
func isolateAWSEnv(t *testing.T) string {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AWS_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(home, "no-credentials"))
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(home, "no-config"))
	return home
}

// seen is one request as the recording proxy saw it.
type seen struct {
	Action           string
	AccessKeyID      string // from the SigV4 Authorization header, "" if unsigned
	SessionToken     bool
	WebIdentityToken string
	DurationSeconds  string
}

// recordingProxy forwards to target and records what clients sent.
type recordingProxy struct {
	URL string
	mu  sync.Mutex
	got []seen
}

func newRecordingProxy(t *testing.T, target string) *recordingProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &recordingProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		form, _ := url.ParseQuery(string(body))
		s := seen{
			Action:           form.Get("Action"),
			SessionToken:     r.Header.Get("X-Amz-Security-Token") != "",
			WebIdentityToken: form.Get("WebIdentityToken"),
			DurationSeconds:  form.Get("DurationSeconds"),
		}
		if _, cred, ok := strings.Cut(r.Header.Get("Authorization"), "Credential="); ok {
			s.AccessKeyID, _, _ = strings.Cut(cred, "/")
		}
		p.mu.Lock()
		p.got = append(p.got, s)
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

func (p *recordingProxy) seen() []seen {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]seen(nil), p.got...)
}

func newRealRefresher(t *testing.T, cfg Config) (*Refresher, *syncbuf.Buffer, error) {
	t.Helper()
	client, err := NewSTSClient(t.Context(), cfg)
	if err != nil {
		return nil, nil, err
	}
	logs := &syncbuf.Buffer{}
	r, err := New(cfg, client, Options{Logger: slog.New(slog.NewTextHandler(logs, nil)), FetchAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return r, logs, nil
}

// TestMotoAssumeRole: real SigV4 and XML through aws-sdk-go-v2 against moto,
// with source keys from the environment; the 900 s duration is honoured and
// the issued set works for a further call.
func TestMotoAssumeRole(t *testing.T) {
	base := motoURL(t)
	isolateAWSEnv(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV000000001")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
	proxy := newRecordingProxy(t, base)
	cfg := Config{
		RoleARN: "arn:aws:iam::111122223333:role/ops/moto-role", SessionName: "it-env",
		Duration: 900 * time.Second, Region: "eu-west-1", STSEndpoint: proxy.URL,
		ExternalID: "ext-42", Tags: map[string]string{"team": "blue"},
	}
	r, _, err := newRealRefresher(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if err := r.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	c, err := r.Current()
	if err != nil {
		t.Fatal(err)
	}
	// moto issues whole-second expiries.
	if lo, hi := before.Add(15*time.Minute-2*time.Second), after.Add(15*time.Minute+time.Second); c.Expires.Before(lo) || c.Expires.After(hi) {
		t.Errorf("Expires = %s, want now+15m (%s..%s)", c.Expires, lo, hi)
	}
	if !strings.HasPrefix(c.AccessKeyID, "ASIA") || c.SecretAccessKey == "" || c.SessionToken == "" ||
		c.RoleARN != cfg.RoleARN || c.AccountID != "111122223333" {
		t.Errorf("Current = %+v", c)
	}
	want := []seen{{Action: "AssumeRole", AccessKeyID: "AKIDFROMENV000000001", DurationSeconds: "900"}}
	if diff := cmp.Diff(want, proxy.seen()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	// The set is real: moto knows it and answers GetCallerIdentity as the role.
	stsc := sts.New(sts.Options{Region: "eu-west-1", BaseEndpoint: aws.String(base),
		Credentials: awscreds.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)})
	id, err := stsc.GetCallerIdentity(t.Context(), &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(id.Arn); got != "arn:aws:sts::111122223333:assumed-role/moto-role/it-env" {
		t.Errorf("caller identity %s", got)
	}
}

// TestMotoSourceCredentialsFromFiles: an explicit credentials_file and
// profile pick the profile's keys (even with other keys in the
// environment), and config_file's credential_process works too.
func TestMotoSourceCredentialsFromFiles(t *testing.T) {
	base := motoURL(t)
	home := isolateAWSEnv(t)
	credFile := filepath.Join(home, "etc-credentials")
	if err := os.WriteFile(credFile, []byte(`[default]
aws_access_key_id = AKIDDEFAULT000000001
aws_secret_access_key = default-secret

[imds]
aws_access_key_id = AKIDPROFILE000000001
aws_secret_access_key = profile-secret
aws_session_token = profile-session-token
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgFile := processProfile(t, home, `echo '{"Version":1,"AccessKeyId":"AKIDPROCESS000000001","SecretAccessKey":"process-secret"}'`)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV000000001")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "env-secret")

	for _, tc := range []struct {
		name string
		cfg  Config
		want seen
	}{
		{"environment keys beat the default profile", Config{CredentialsFile: credFile}, seen{AccessKeyID: "AKIDFROMENV000000001"}},
		{"profile of credentials_file", Config{CredentialsFile: credFile, Profile: "imds"}, seen{AccessKeyID: "AKIDPROFILE000000001", SessionToken: true}},
		{"credential_process in config_file", Config{ConfigFile: cfgFile, CredentialsFile: credFile, Profile: "proc"}, seen{AccessKeyID: "AKIDPROCESS000000001"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy := newRecordingProxy(t, base)
			cfg := tc.cfg
			cfg.RoleARN, cfg.SessionName, cfg.STSEndpoint = "arn:aws:iam::123456789012:role/files", "it-files", proxy.URL
			r, _, err := newRealRefresher(t, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Fetch(t.Context()); err != nil {
				t.Fatal(err)
			}
			want := tc.want
			want.Action, want.DurationSeconds = "AssumeRole", "3600"
			if diff := cmp.Diff([]seen{want}, proxy.seen()); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("credential_process output is never quoted", func(t *testing.T) {
		bad := filepath.Join(home, "bad-helper")
		if err := os.WriteFile(bad, []byte("#!/bin/sh\necho 'AccessKeyId=AKIDLEAK SecretAccessKey=leaked-secret-value'\n"), 0o700); err != nil {
			t.Fatal(err)
		}
		badCfg := filepath.Join(home, "bad-config")
		if err := os.WriteFile(badCfg, []byte("[profile bad]\ncredential_process = "+bad+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r, logs, err := newRealRefresher(t, Config{RoleARN: testRole, STSEndpoint: base, ConfigFile: badCfg, Profile: "bad"})
		if err != nil {
			t.Fatal(err)
		}
		err = r.Fetch(t.Context())
		_, cerr := r.Current()
		all := fmt.Sprint(err, cerr, r.State(), logs.String())
		if err == nil || r.State().LastErrorClass != ClassSourceCredentials {
			t.Fatalf("Fetch err = %v, class %q", err, r.State().LastErrorClass)
		}
		if strings.Contains(all, "leaked-secret-value") {
			t.Fatalf("the process output leaked:\n%s", all)
		}
	})
	t.Run("missing credentials_file", func(t *testing.T) {
		_, err := NewSTSClient(t.Context(), Config{RoleARN: testRole, CredentialsFile: filepath.Join(home, "absent")})
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "checking credentials_file") {
			t.Fatalf("err = %v, want a credentials_file not-exist error", err)
		}
	})
	t.Run("unknown profile", func(t *testing.T) {
		_, err := NewSTSClient(t.Context(), Config{RoleARN: testRole, CredentialsFile: credFile, Profile: "nope"})
		if err == nil || !strings.Contains(err.Error(), "nope") {
			t.Fatalf("err = %v, want an error naming the profile", err)
		}
	})
}

// processProfile writes a shell script of script's lines into dir and a
// shared config file whose profile "proc" runs it as its credential_process;
// it returns the config file's path.
func processProfile(t *testing.T, dir, script string) string {
	t.Helper()
	helper := filepath.Join(dir, "cred-helper")
	if err := os.WriteFile(helper, []byte("#!/bin/sh\n"+script+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "etc-config")
	if err := os.WriteFile(cfgFile, []byte("[profile proc]\ncredential_process = "+helper+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgFile
}

// TestMotoRolesShareTheirSource: the roles of one configuration run its
// credential_process once between them, not once per role, and every
// AssumeRole is signed with that one process's keys. The control builds
// each role's client with NewSTSClient, one load per role, and must see the
// process run once per role: that is the count the sharing removes.
func TestMotoRolesShareTheirSource(t *testing.T) {
	base := motoURL(t)
	home := isolateAWSEnv(t)
	runs := filepath.Join(home, "runs")
	cfgFile := processProfile(t, home, "echo run >>"+runs+"\n"+
		`echo '{"Version":1,"AccessKeyId":"AKIDPROCESS000000002","SecretAccessKey":"process-secret"}'`)
	countRuns := func() int {
		b, err := os.ReadFile(runs)
		if errors.Is(err, os.ErrNotExist) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "run\n")
	}
	const n = 3
	for _, tc := range []struct {
		name      string
		newClient func(context.Context, Config) (STSAPI, error) // nil: the Set's own
		wantRuns  int
	}{
		{"a Set's roles", nil, 1},
		{"control: one load per role", func(ctx context.Context, c Config) (STSAPI, error) { return NewSTSClient(ctx, c) }, n},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.Remove(runs); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			proxy := newRecordingProxy(t, base)
			var roles []Role
			for i := range n {
				roles = append(roles, Role{Key: fmt.Sprintf("roles[%d]", i), Config: Config{
					RoleARN: fmt.Sprintf("arn:aws:iam::123456789012:role/shared-%d", i), SessionName: "it-shared",
					STSEndpoint: proxy.URL, ConfigFile: cfgFile, Profile: "proc", Region: "eu-west-1",
				}})
			}
			set, err := NewSet(t.Context(), roles, SetOptions{NewClient: tc.newClient, Options: Options{FetchAttempts: 1}})
			if err != nil {
				t.Fatal(err)
			}
			if err := set.Fetch(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got := countRuns(); got != tc.wantRuns {
				t.Errorf("credential_process ran %d times for %d roles, want %d", got, n, tc.wantRuns)
			}
			want := seen{Action: "AssumeRole", AccessKeyID: "AKIDPROCESS000000002", DurationSeconds: "3600"}
			if diff := cmp.Diff([]seen{want, want, want}, proxy.seen()); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSTSClientsShareOnlyTheSource: clients of one STSClients share the
// loaded source (one credentials provider) where their source settings
// agree, and nothing else: each role without a region gets its own
// partition's default, and another profile is another load.
func TestSTSClientsShareOnlyTheSource(t *testing.T) {
	home := isolateAWSEnv(t)
	credFile := filepath.Join(home, "etc-credentials")
	if err := os.WriteFile(credFile, []byte("[a]\naws_access_key_id = AKIDA\naws_secret_access_key = a\n[b]\naws_access_key_id = AKIDB\naws_secret_access_key = b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var clients STSClients
	client := func(arn, profile string) *sts.Client {
		t.Helper()
		c, err := clients.Client(t.Context(), Config{RoleARN: arn, CredentialsFile: credFile, Profile: profile})
		if err != nil {
			t.Fatal(err)
		}
		return c.(*sts.Client)
	}
	commercial := client("arn:aws:iam::123456789012:role/one", "a").Options()
	china := client("arn:aws-cn:iam::123456789012:role/two", "a").Options()
	other := client("arn:aws:iam::123456789012:role/three", "b").Options()
	if commercial.Region != "us-east-1" || china.Region != "cn-north-1" {
		t.Errorf("regions %q, %q; want each partition's default", commercial.Region, china.Region)
	}
	if commercial.Credentials != china.Credentials {
		t.Error("two roles of one source have two credentials providers")
	}
	if commercial.Credentials == other.Credentials {
		t.Error("profiles a and b share one credentials provider")
	}
	for _, c := range []struct {
		o    sts.Options
		want string
	}{{commercial, "AKIDA"}, {china, "AKIDA"}, {other, "AKIDB"}} {
		got, err := c.o.Credentials.Retrieve(t.Context())
		if err != nil || got.AccessKeyID != c.want {
			t.Errorf("Retrieve = %s, %v; want %s", got.AccessKeyID, err, c.want)
		}
	}
}

// TestIMDSNeverUsedForSourceCredentials points the SDK's IMDS endpoint at a
// local listener and leaves no other source of keys. The control shows that
// the SDK's default chain would ask that listener; NewSTSClient's must not,
// even with AWS_EC2_METADATA_DISABLED=false and defaults_mode auto (which
// also probes IMDS).
func TestIMDSNeverUsedForSourceCredentials(t *testing.T) {
	base := motoURL(t)
	isolateAWSEnv(t)
	var hits atomic.Int64
	fakeIMDS := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.NotFound(w, r)
	}))
	defer fakeIMDS.Close()
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", fakeIMDS.URL+"/")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "false")
	t.Setenv("AWS_DEFAULTS_MODE", "auto")
	t.Setenv("AWS_REGION", "us-east-1")

	t.Run("control: the SDK default chain asks IMDS", func(t *testing.T) {
		awsCfg, err := config.LoadDefaultConfig(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		_, err = sts.NewFromConfig(awsCfg, func(o *sts.Options) { o.BaseEndpoint = aws.String(base) }).
			AssumeRole(t.Context(), &sts.AssumeRoleInput{RoleArn: aws.String(testRole), RoleSessionName: aws.String("ctl")})
		if err == nil {
			t.Fatal("AssumeRole without source credentials succeeded")
		}
		if hits.Load() == 0 {
			t.Fatal("the fake IMDS was never contacted: the control cannot show anything")
		}
	})
	hits.Store(0)
	cfg := Config{RoleARN: testRole, SessionName: "it-noimds", STSEndpoint: base}
	r, logs, err := newRealRefresher(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = r.Fetch(t.Context())
	if err == nil {
		t.Fatal("Fetch without source credentials succeeded")
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the IMDS endpoint was contacted %d times", n)
	}
	st := r.State()
	if st.LastErrorClass != ClassSourceCredentials || !strings.Contains(err.Error(), "never used for imds-shim's own source credentials") {
		t.Errorf("err = %v, class %q; want source_credentials naming the IMDS refusal", err, st.LastErrorClass)
	}
	if !strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("no error-level log:\n%s", logs)
	}
}

// TestMotoWebIdentityTokenChanges: the token file is re-read per call, the
// request is unsigned (no AWS keys exist), and moto accepts it.
func TestMotoWebIdentityTokenChanges(t *testing.T) {
	base := motoURL(t)
	home := isolateAWSEnv(t)
	proxy := newRecordingProxy(t, base)
	tok := filepath.Join(home, "token")
	cfg := Config{RoleARN: "arn:aws:iam::123456789012:role/web", SessionName: "it-web",
		Duration: 15 * time.Minute, STSEndpoint: proxy.URL, WebIdentityTokenFile: tok}
	r, _, err := newRealRefresher(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, jwt := range []string{"eyJhbGciOiJub25lIn0.first.sig", "eyJhbGciOiJub25lIn0.second.sig\n"} {
		if err := os.WriteFile(tok, []byte(jwt), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := r.Fetch(t.Context()); err != nil {
			t.Fatal(err)
		}
		c, err := r.Current()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, c.AccessKeyID)
	}
	want := []seen{
		{Action: "AssumeRoleWithWebIdentity", WebIdentityToken: "eyJhbGciOiJub25lIn0.first.sig", DurationSeconds: "900"},
		{Action: "AssumeRoleWithWebIdentity", WebIdentityToken: "eyJhbGciOiJub25lIn0.second.sig", DurationSeconds: "900"},
	}
	if diff := cmp.Diff(want, proxy.seen()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	if keys[0] == keys[1] || !strings.HasPrefix(keys[1], "ASIA") {
		t.Errorf("access keys %v, want two distinct sets", keys)
	}
}

// TestSDKErrorsClassified runs real STS error documents through the SDK's
// deserializers and checks the class each gets.
func TestSDKErrorsClassified(t *testing.T) {
	isolateAWSEnv(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV000000001")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
	for _, tc := range []struct {
		status int
		code   string
		want   string
	}{
		{400, "Throttling", ClassThrottling},
		{403, "AccessDenied", ClassAccessDenied},
		{403, "InvalidClientTokenId", ClassSourceCredentials},
		{400, "MalformedPolicyDocument", ClassInvalidRequest},
		{403, "RegionDisabledException", ClassRegionDisabled},
		{500, "InternalFailure", ClassServer},
		{503, "", ClassServer},
		{429, "", ClassThrottling},
	} {
		t.Run(fmt.Sprint(tc.status, tc.code), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/xml")
				w.WriteHeader(tc.status)
				if tc.code != "" {
					fmt.Fprintf(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>%s</Code><Message>test</Message></Error><RequestId>r-1</RequestId></ErrorResponse>`, tc.code)
				}
			}))
			defer srv.Close()
			client, err := NewSTSClient(t.Context(), Config{RoleARN: testRole, STSEndpoint: srv.URL},
				func(o *sts.Options) { o.RetryMaxAttempts = 1 })
			if err != nil {
				t.Fatal(err)
			}
			_, err = client.AssumeRole(t.Context(), &sts.AssumeRoleInput{RoleArn: aws.String(testRole), RoleSessionName: aws.String("it")})
			if got := classify(err); got != tc.want {
				t.Errorf("classify(%v) = %q, want %q", err, got, tc.want)
			}
		})
	}
	t.Run("connection refused", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close()
		client, err := NewSTSClient(t.Context(), Config{RoleARN: testRole, STSEndpoint: srv.URL},
			func(o *sts.Options) { o.RetryMaxAttempts = 1 })
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.AssumeRole(t.Context(), &sts.AssumeRoleInput{RoleArn: aws.String(testRole), RoleSessionName: aws.String("it")})
		if got := classify(err); got != ClassNetwork {
			t.Errorf("classify(%v) = %q, want network", err, got)
		}
	})
}
