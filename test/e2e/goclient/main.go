// Command goclient is the AWS SDK for Go v2 client of the end-to-end test
// (test/e2e/run.sh). It loads the SDK's default configuration, as any
// application would, calls STS GetCallerIdentity and prints the caller's
// ARN and where the credentials came from. Inside the test guest there is no
// AWS configuration at all, so the credentials can only come from the
// instance metadata service at 169.254.169.254, that is from imds-shim.
//
// The STS endpoint of the test's emulator is given the standard way, with
// AWS_ENDPOINT_URL_STS.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "goclient:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := config.LoadDefaultConfig(ctx, config.WithEC2IMDSRegion())
	if err != nil {
		return fmt.Errorf("loading default config: %w", err)
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return fmt.Errorf("retrieving credentials: %w", err)
	}
	out, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return fmt.Errorf("calling GetCallerIdentity: %w", err)
	}
	fmt.Printf("arn=%s source=%s\n", aws.ToString(out.Arn), creds.Source)
	return nil
}
