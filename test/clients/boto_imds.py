"""Fetch credentials and region from the IMDS named by
AWS_EC2_METADATA_SERVICE_ENDPOINT with botocore/boto3, unmodified, and print
them as one JSON line for pkg/imds/clients_test.go. The secret is reduced to
its length so that it never reaches test logs."""

import json

import boto3
import botocore.utils

session = boto3.Session()
creds = session.get_credentials()
frozen = creds.get_frozen_credentials()

# botocore reads the region from IMDS only for defaults_mode=auto, through
# IMDSRegionProvider built from the session's config (botocore/session.py).
region = botocore.utils.IMDSRegionProvider(session._session).provide()

print(json.dumps({
    "method": creds.method,
    "accessKeyId": frozen.access_key,
    "secretLength": len(frozen.secret_key),
    "sessionToken": frozen.token,
    "region": region,
}))
