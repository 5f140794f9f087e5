// Fetches credentials and region from the IMDS named by
// AWS_EC2_METADATA_SERVICE_ENDPOINT with the AWS SDK for JavaScript v3,
// unmodified, and prints them as one JSON line for pkg/imds/clients_test.go.
// The secret is reduced to its length so that it never reaches test logs.
import { fromInstanceMetadata } from "@aws-sdk/credential-providers";
import { loadConfig, NODE_REGION_CONFIG_OPTIONS, NODE_REGION_CONFIG_FILE_OPTIONS } from "@smithy/core/config";

const creds = await fromInstanceMetadata({ timeout: 1000, maxRetries: 0 })();
// The default region chain: env, shared config, then IMDS placement/region.
const region = await loadConfig(NODE_REGION_CONFIG_OPTIONS, NODE_REGION_CONFIG_FILE_OPTIONS)();
console.log(JSON.stringify({
  accessKeyId: creds.accessKeyId,
  secretLength: creds.secretAccessKey.length,
  sessionToken: creds.sessionToken,
  expiration: creds.expiration?.toISOString(),
  region,
}));
