package imds

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	awsimds "github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// Unmodified SDKs reach the server through an HTTP proxy that adds
// X-Forwarded-For, as kube2iam, kiam or a sidecar proxy did on EC2
// (aws/aws-sdk-kotlin#627, jtblin/kube2iam#241). EC2 refuses the token PUT
// with 403; the SDK sources decide what follows:
//   - botocore (utils.py IMDSFetcher._fetch_metadata_token): 403/404/405
//     mean "no token", the request goes on without one; 400 raises
//     BadIMDSRequestError and the provider returns no credentials.
//   - aws-sdk-go-v2 (feature/ec2/imds token_provider.go updateToken):
//     403/404/405 disable the token provider and fall back to IMDSv1;
//     "400 errors are terminal". A 401 on the GET re-enables it and
//     retries, so in required mode every attempt ends in 401.
//
// So with tokens: optional both get credentials over IMDSv1, as on EC2,
// and with tokens: required both fail as on EC2 with HttpTokens=required:
// botocore with no credentials, Go with the 401.

// startProxiedServer runs the handler in a net/http.Server on loopback
// (the daemon serves it as http.Server.Handler) and a reverse proxy in
// front of it that adds X-Forwarded-For, and returns the proxy's URL.
func startProxiedServer(t *testing.T, mode TokenMode) (string, *clientServer) {
	t.Helper()
	c := testCreds(3)
	c.AccessKeyID = "ASIAIMDSSHIMPROXY" + strings.ToUpper(string(mode[:3]))
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
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		_ = hs.Close()
		<-done
	})
	target := &url.URL{Scheme: "http", Host: ln.Addr().String()}
	proxy := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.SetXForwarded()
	}})
	t.Cleanup(proxy.Close)
	return proxy.URL, &clientServer{url: proxy.URL, creds: c, src: src, obs: obs}
}

// checkProxied verifies that the SDK's token PUT reached the server with
// X-Forwarded-For and was refused, and that no token was issued.
func checkProxied(t *testing.T, s *clientServer) {
	t.Helper()
	log := s.obs.String()
	if !strings.Contains(log, "request token Forbidden") {
		t.Errorf("no token PUT was refused (did the proxy add X-Forwarded-For?):\n%s", log)
	}
	for _, bad := range []string{"token issued", "Bad Request"} {
		if strings.Contains(log, bad) {
			t.Errorf("server log has %q:\n%s", bad, log)
		}
	}
}

func goSDKEnv(t *testing.T, endpoint string) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "AWS_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	t.Setenv("HOME", t.TempDir())
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)
}

func TestGoSDKBehindForwardingProxy(t *testing.T) {
	t.Run("optional", func(t *testing.T) {
		endpoint, s := startProxiedServer(t, TokenOptional)
		goSDKEnv(t, endpoint)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cfg, err := config.LoadDefaultConfig(ctx, config.WithEC2IMDSRegion())
		if err != nil {
			t.Fatalf("LoadDefaultConfig: %v", err)
		}
		if cfg.Region != clientRegion {
			t.Errorf("region from IMDS (v1 fallback) = %q, want %q", cfg.Region, clientRegion)
		}
		c, err := cfg.Credentials.Retrieve(ctx)
		if err != nil {
			t.Fatalf("credentials through the proxy: %v", err)
		}
		if c.Source != ec2rolecreds.ProviderName || c.AccessKeyID != s.creds.AccessKeyID || c.SessionToken != s.creds.SessionToken {
			t.Errorf("got %s key %q, want ec2rolecreds key %q", c.Source, c.AccessKeyID, s.creds.AccessKeyID)
		}
		checkProxied(t, s)
	})
	t.Run("required", func(t *testing.T) {
		endpoint, s := startProxiedServer(t, TokenRequired)
		goSDKEnv(t, endpoint)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		client := awsimds.New(awsimds.Options{Endpoint: endpoint})
		_, err := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = client }).Retrieve(ctx)
		// The 401 arrives wrapped in the token provider's retryableError,
		// which has no Unwrap (token_provider.go), so errors.As cannot
		// reach the status: the SDK's message is all there is.
		if err == nil || !strings.Contains(err.Error(), "StatusCode: 401") {
			t.Fatalf("Retrieve = %v; want the 401 of a tokenless GET, as on EC2 with HttpTokens=required", err)
		}
		checkProxied(t, s)
		if !strings.Contains(s.obs.String(), "request credentials Unauthorized") {
			t.Errorf("the SDK never fell back to a tokenless GET:\n%s", s.obs.String())
		}
	})
}

func TestBotocoreBehindForwardingProxy(t *testing.T) {
	py := requireClient(t, "python3 with boto3", "python3")
	t.Run("optional", func(t *testing.T) {
		t.Parallel()
		endpoint, s := startProxiedServer(t, TokenOptional)
		out := runClient(t, clientEnv(t, endpoint), py, filepath.Join(repoRoot(t), "test", "clients", "boto_imds.py"))
		var got clientResult
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("decoding %q: %v", out, err)
		}
		if got.Method != "iam-role" {
			t.Errorf("credential method = %q, want iam-role", got.Method)
		}
		checkResult(t, s, got, true)
		checkProxied(t, s)
	})
	t.Run("required", func(t *testing.T) {
		t.Parallel()
		endpoint, s := startProxiedServer(t, TokenRequired)
		out := runClient(t, clientEnv(t, endpoint), py, "-c", "import boto3; print(boto3.Session().get_credentials())")
		if got := strings.TrimSpace(string(out)); got != "None" {
			t.Errorf("botocore credentials = %q, want None (as on EC2 with HttpTokens=required)", got)
		}
		checkProxied(t, s)
		if !strings.Contains(s.obs.String(), "Unauthorized") {
			t.Errorf("botocore never fell back to a tokenless GET:\n%s", s.obs.String())
		}
	})
}

// ec2-metadata from amazon-ec2-utils (Amazon Linux's tool, packaged by
// Debian) reads the entries this round added, the way it does on EC2:
// ramdisk-id and reservation-id through /latest//meta-data/ (a doubled
// slash), block-device-mapping/ item by item, public-keys/ by splitting
// "index=name" and then listing index/ for the key's format. It talks to
// http://169.254.169.254 only, through curl, so the test points curl's
// http_proxy at the server: the request line then carries the absolute URL
// and Host 169.254.169.254, and the tool itself is unmodified.
func TestEC2MetadataTool(t *testing.T) {
	tool := requireClient(t, "ec2-metadata (apt amazon-ec2-utils)", "ec2-metadata")
	c := testCreds(4)
	cfg := baseConfig() // tokens required: the tool uses IMDSv2
	cfg.Region = clientRegion
	cfg.PublicKeys = map[string]string{"deploy": testPublicKey}
	cfg.SecurityGroups = []string{"default", "build-hosts"}
	host := testHost
	srv, err := NewServer(cfg, &fakeSource{creds: c}, Options{Host: &host})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	env := []string{"PATH=" + os.Getenv("PATH"), "LANG=C.UTF-8", "HOME=" + t.TempDir(), "http_proxy=" + ts.URL}
	out := string(runClient(t, env, tool))
	for _, want := range []string{
		"instance-id: " + defaultInstanceID(testHost) + "\n",
		"block-device-mapping: \n\t ami: /dev/xvda\n\t root: /dev/xvda\n",
		"public-keys: \nkeyname:deploy\nindex:0\nformat:openssh-key\nkey:(begins from next line)\n" + testPublicKey + "\n",
		"ramdisk-id: not available\n",
		"reservation-id: " + defaultReservationID(testHost) + "\n",
		"security-groups: default\nbuild-hosts\n",
		"placement: " + clientRegion + "a\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ec2-metadata output lacks %q:\n%s", want, out)
		}
	}
}
