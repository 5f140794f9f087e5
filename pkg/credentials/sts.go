package credentials

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

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
func NewSTSClient(ctx context.Context, cfg Config, optFns ...func(*sts.Options)) (STSAPI, error) {
	arn, err := ParseRoleARN(cfg.RoleARN)
	if err != nil {
		return nil, fmt.Errorf("parsing role_arn: %w", err)
	}
	for _, f := range []struct{ key, path string }{
		{"credentials_file", cfg.CredentialsFile},
		{"config_file", cfg.ConfigFile},
	} {
		// The SDK silently skips missing shared files; an explicitly
		// configured one must exist.
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("checking %s: %w", f.key, err)
		}
	}
	loadOpts := []func(*config.LoadOptions) error{
		config.WithEC2IMDSClientEnableState(imds.ClientDisabled),
		config.WithEC2RoleCredentialOptions(func(o *ec2rolecreds.Options) { o.Client = refusingIMDS{} }),
	}
	if cfg.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(cfg.Region))
	}
	if cfg.WebIdentityTokenFile != "" {
		// AssumeRoleWithWebIdentity is unsigned; the token is the proof.
		loadOpts = append(loadOpts, config.WithCredentialsProvider(aws.AnonymousCredentials{}))
	} else {
		if cfg.Profile != "" {
			loadOpts = append(loadOpts, config.WithSharedConfigProfile(cfg.Profile))
		}
		if cfg.CredentialsFile != "" {
			loadOpts = append(loadOpts, config.WithSharedCredentialsFiles([]string{cfg.CredentialsFile}))
		}
		if cfg.ConfigFile != "" {
			loadOpts = append(loadOpts, config.WithSharedConfigFiles([]string{cfg.ConfigFile}))
		}
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("loading AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		region, ok := partitionRegions[arn.Partition]
		if !ok {
			return nil, fmt.Errorf("choosing an STS region: partition %s has no default, set region", arn.Partition)
		}
		awsCfg.Region = region
	}
	if cfg.WebIdentityTokenFile == "" {
		awsCfg.Credentials = sourceProvider{awsCfg.Credentials}
	}
	opts := []func(*sts.Options){}
	if cfg.STSEndpoint != "" {
		opts = append(opts, func(o *sts.Options) { o.BaseEndpoint = aws.String(cfg.STSEndpoint) })
	}
	return sts.NewFromConfig(awsCfg, append(opts, optFns...)...), nil
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
