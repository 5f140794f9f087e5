package credentials

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/credentials/processcreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// STSAPI is the part of *sts.Client the Refresher uses; tests substitute a
// scripted fake.
type STSAPI interface {
	AssumeRole(ctx context.Context, in *sts.AssumeRoleInput, optFns ...func(*sts.Options)) (*sts.AssumeRoleOutput, error)
	AssumeRoleWithWebIdentity(ctx context.Context, in *sts.AssumeRoleWithWebIdentityInput, optFns ...func(*sts.Options)) (*sts.AssumeRoleWithWebIdentityOutput, error)
}

var _ STSAPI = (*sts.Client)(nil)

// errIMDSRefused is what the SDK's EC2 role provider gets in place of an
// IMDS client: imds-shim answers 169.254.169.254 itself, so asking IMDS for
// its own source credentials would loop back into the shim.
var errIMDSRefused = errors.New("EC2 instance metadata is never used for imds-shim's own source credentials; configure environment variables, credentials_file/profile, credential_process, SSO or web_identity_token_file")

type refusingIMDS struct{}

func (refusingIMDS) GetMetadata(context.Context, *imds.GetMetadataInput, ...func(*imds.Options)) (*imds.GetMetadataOutput, error) {
	return nil, errIMDSRefused
}

var _ ec2rolecreds.GetMetadataAPIClient = refusingIMDS{}

// partitionRegions are used when neither region nor the SDK's own
// resolution (AWS_REGION, the profile) gives one: STS needs a region to sign
// and to pick its regional endpoint.
var partitionRegions = map[string]string{
	"aws":        "us-east-1",
	"aws-cn":     "cn-north-1",
	"aws-us-gov": "us-gov-west-1",
	"aws-iso":    "us-iso-east-1",
	"aws-iso-b":  "us-isob-east-1",
	"aws-iso-e":  "eu-isoe-west-1",
	"aws-iso-f":  "us-isof-south-1",
	"aws-eusc":   "eusc-de-east-1",
}

// NewSTSClient builds the STS client for cfg. Source credentials come from
// the SDK's standard chain — environment, shared credentials/config files
// (cfg.CredentialsFile, cfg.ConfigFile, cfg.Profile), credential_process,
// SSO, container endpoints — but never from EC2 instance metadata: the IMDS
// client is disabled (whatever AWS_EC2_METADATA_DISABLED says) and the EC2
// role provider is given a client that refuses. With WebIdentityTokenFile no
// source credentials are loaded at all. optFns adjust the STS client (tests
// use them to cut retries). The credentials are resolved lazily, on the
// first call, so a missing key shows up as a classified refresh error.
//
// Each call loads the SDK's configuration anew; STSClients.Client builds
// the clients of several roles from one load.
func NewSTSClient(ctx context.Context, cfg Config, optFns ...func(*sts.Options)) (STSAPI, error) {
	return new(STSClients).Client(ctx, cfg, optFns...)
}

// STSClients builds the STS clients of the roles of one configuration, as
// NewSTSClient does, loading the SDK's configuration once per distinct
// source (region, profile, credentials_file, config_file, web identity)
// rather than once per role. Roles with one source then share its source
// credentials and their cache, so a credential_process or an SSO token
// refresh runs once per expiry for all of them instead of once per role,
// and a CA bundle (AWS_CA_BUNDLE, ca_bundle) is read and parsed once. A
// failed load is not kept: the next role tries again. The zero value is
// ready; it is safe for concurrent use. Keep one for as long as its roles'
// configuration holds: a reload that changes the source files starts a new
// one (Set does, through SetOptions.NewClient).
type STSClients struct {
	mu     sync.Mutex
	loaded map[stsSource]aws.Config
}

// stsSource is what loading the SDK's configuration depends on.
type stsSource struct {
	region, profile, credentialsFile, configFile string
	webIdentity                                  bool
}

// Client returns the STS client for cfg.
func (s *STSClients) Client(ctx context.Context, cfg Config, optFns ...func(*sts.Options)) (STSAPI, error) {
	arn, err := ParseRoleARN(cfg.RoleARN)
	if err != nil {
		return nil, fmt.Errorf("parsing role_arn: %w", err)
	}
	awsCfg, err := s.load(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// awsCfg is a copy: the region chosen here is this role's alone, while
	// its credentials provider and HTTP client stay shared.
	if awsCfg.Region == "" {
		region, ok := partitionRegions[arn.Partition]
		if !ok {
			return nil, fmt.Errorf("choosing an STS region: partition %s has no default, set region", arn.Partition)
		}
		awsCfg.Region = region
	}
	opts := []func(*sts.Options){}
	if cfg.STSEndpoint != "" {
		opts = append(opts, func(o *sts.Options) { o.BaseEndpoint = aws.String(cfg.STSEndpoint) })
	}
	return sts.NewFromConfig(awsCfg, append(opts, optFns...)...), nil
}

// load returns the SDK's configuration for cfg's source, loading it the
// first time.
func (s *STSClients) load(ctx context.Context, cfg Config) (aws.Config, error) {
	key := stsSource{cfg.Region, cfg.Profile, cfg.CredentialsFile, cfg.ConfigFile, cfg.WebIdentityTokenFile != ""}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.loaded[key]; ok {
		return c, nil
	}
	for _, f := range []struct{ key, path string }{
		{"credentials_file", key.credentialsFile},
		{"config_file", key.configFile},
	} {
		// The SDK silently skips missing shared files; an explicitly
		// configured one must exist.
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return aws.Config{}, fmt.Errorf("checking %s: %w", f.key, err)
		}
	}
	loadOpts := []func(*config.LoadOptions) error{
		config.WithEC2IMDSClientEnableState(imds.ClientDisabled),
		config.WithEC2RoleCredentialOptions(func(o *ec2rolecreds.Options) { o.Client = refusingIMDS{} }),
	}
	if key.region != "" {
		loadOpts = append(loadOpts, config.WithRegion(key.region))
	}
	if key.webIdentity {
		// AssumeRoleWithWebIdentity is unsigned; the token is the proof.
		loadOpts = append(loadOpts, config.WithCredentialsProvider(aws.AnonymousCredentials{}))
	} else {
		if key.profile != "" {
			loadOpts = append(loadOpts, config.WithSharedConfigProfile(key.profile))
		}
		if key.credentialsFile != "" {
			loadOpts = append(loadOpts, config.WithSharedCredentialsFiles([]string{key.credentialsFile}))
		}
		if key.configFile != "" {
			loadOpts = append(loadOpts, config.WithSharedConfigFiles([]string{key.configFile}))
		}
	}
	c, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("loading AWS configuration: %w", err)
	}
	if !key.webIdentity {
		c.Credentials = sourceProvider{c.Credentials}
	}
	if s.loaded == nil {
		s.loaded = map[stsSource]aws.Config{}
	}
	s.loaded[key] = c
	return c, nil
}

// SourceCredentialsError means the SDK's chain produced no usable source
// credentials for signing the STS call (no keys, a failing
// credential_process, an expired SSO token, …).
type SourceCredentialsError struct{ Err error }

func (e *SourceCredentialsError) Error() string {
	return "resolving source credentials: " + e.Err.Error()
}
func (e *SourceCredentialsError) Unwrap() error { return e.Err }

// sourceProvider marks errors from the source chain so that the Refresher
// can tell them from STS's answers.
type sourceProvider struct{ inner aws.CredentialsProvider }

func (p sourceProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	if p.inner == nil {
		return aws.Credentials{}, &SourceCredentialsError{Err: errors.New("no credential provider configured")}
	}
	c, err := p.inner.Retrieve(ctx)
	var pe *processcreds.ProviderError
	if errors.As(err, &pe) && strings.Contains(pe.Error(), "parse failed of process output") {
		// The SDK quotes the whole output, which may hold a secret key.
		err = errors.New("credential_process printed something that is not credential JSON (output withheld: it may contain secrets)")
	}
	if err != nil {
		return c, &SourceCredentialsError{Err: err}
	}
	return c, nil
}
