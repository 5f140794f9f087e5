// Package credentials obtains temporary credentials for one IAM role from STS
// and keeps them fresh in the background, so that the IMDS handler can serve
// them without ever calling STS on the request path.
//
// # Source credentials
//
// NewSTSClient signs with the AWS SDK's standard chain (environment,
// shared credentials/config files with an explicit profile, credential_process,
// SSO, container endpoints) with EC2 instance metadata removed: the SDK's
// IMDS client is disabled whatever AWS_EC2_METADATA_DISABLED says (that also
// stops defaults_mode=auto from probing IMDS), and the EC2 role provider gets
// a client that refuses with an explanatory error. The shim answers
// 169.254.169.254 itself and must never ask itself. With
// web_identity_token_file set, AssumeRoleWithWebIdentity is called unsigned
// with the token re-read from the file on every call, and no AWS keys are
// needed at all.
//
// STSClients loads that chain once for all the roles that share a source
// (every role of one configuration file does), so they share one cached
// set of source credentials: a credential_process or an SSO token refresh
// runs once per expiry, not once per role, and a CA bundle is parsed once.
//
// # IAM Roles Anywhere
//
// With roles_anywhere configured (RolesAnywhereConfig), the source is an
// X.509 certificate from the organisation's PKI instead of an AWS key:
// RolesAnywhere signs IAM Roles Anywhere's CreateSession
// (POST /sessions?profileArn=…&roleArn=…&trustAnchorArn=… at
// rolesanywhere.REGION.amazonaws.com, the region taken from the trust
// anchor ARN) with the certificate's key and gets credentials for
// roles_anywhere.role_arn. A served role with that ARN is served from
// CreateSession directly (NewRolesAnywhereSTSClient answers its AssumeRole
// itself: no chaining, so up to 12 hours, and no session policy, tags or
// external ID); every other served role is assumed through STS with the
// Roles Anywhere session as source credentials (RolesAnywhere.Provider, one
// cached session shared by all of them), which AWS caps at 1 hour as role
// chaining. Certificate and key are read again for every CreateSession, so a
// certificate renewed in place by certbot, step, Vault or SPIRE is used at the
// next refresh without a restart. A certificate or key that cannot be read,
// does not match, or is expired or not yet valid is a CertificateError
// (class "certificate"): retried with the long backoff while the last good
// set is served until its margin — never an empty set, never an exit. A 403
// from the service is access_denied, 400/404 (a wrong ARN, a disabled
// profile) invalid_request, 429 throttling, 5xx server. CheckRolesAnywhere
// is what `imds-shim check` reports: the files, the key/certificate match,
// the chain in the file, the leaf's subject, serial and expiry, a warning
// from CertificateWarnBefore (7 days) before it, and the value of
// imds_shim_certificate_expiry_seconds. Neither errors nor reports ever
// quote the key file: parse errors name the file and the PEM block type only.
// What a served role may ask of this source (no session policy, tags or
// external ID for the directly served role; at most 1 hour for a chained
// one) is part of the configuration's one validation, in pkg/config, by key;
// NewRolesAnywhere checks only the invariants it relies on. The command
// shares one RolesAnywhere between every served role's STS client, so that
// all chained roles share one CreateSession.
//
// The signer is written here, on the standard library, because nothing
// that exists fits. AWS's own helper
// (github.com/aws/rolesanywhere-credential-helper/aws_signing_helper) calls
// os.Exit(1) when signing fails and on read errors while it re-reads the key
// and certificate for each signature, so a rotation at the wrong moment would
// kill the daemon; it does not build with CGO_ENABLED=0 (its PKCS#11 signer
// has no build tag), which our static packages need; and it brings about 100
// modules, aws-sdk-go v1 among them. aws-sdk-go-v2 cannot sign the request:
// its v4 signer exposes only HMAC signing, and its service/rolesanywhere is
// the management API, without CreateSession. The protocol is SigV4's
// canonical request and string to sign with the HMAC chain replaced by a
// signature with the certificate's key (AWS4-X509-RSA-SHA256, PKCS#1 v1.5;
// AWS4-X509-ECDSA-SHA256, ASN.1 DER) and the access key ID replaced by the
// certificate's serial number; the tests pin it with fixed vectors and
// against pkg/internal/rafake, a fake of the endpoint that verifies
// everything the service verifies.
//
// Keys in PKCS#11 tokens or a TPM are not supported yet. They would plug in
// at one seam: the signer only ever uses the key as a crypto.Signer (Sign
// over a SHA-256 digest, Public to match the certificate), so a PKCS#11
// session or a TPM handle wrapped as a crypto.Signer (for example with
// github.com/ThalesGroup/crypto11 or github.com/google/go-tpm-tools, both
// behind a build tag so that CGO_ENABLED=0 builds keep working) would replace
// loadPrivateKey for a private_key of the form pkcs11:… or handle:…; the
// certificate would still come from the file (or the token), and rotation
// would re-open the object at each refresh.
//
// # Refresh policy
//
// Fetch obtains the first set before the daemon reports ready, retrying
// transient errors a few times. After each success the next refresh is
// scheduled for when the set has 50–65 % of its life left (30–39 minutes for
// 1-hour sessions, 7.5–9.75 minutes for 15-minute ones), so served credentials
// keep at least half their lifetime while STS answers — well clear of the
// SDKs' own refresh windows (botocore 15/10 min, Go v1/JS v3/Java v2 5 min).
// The first refresh after start uses a wider window (50–90 % left) so a fleet
// restarted at once spreads out immediately. Only one STS call is ever in
// flight. Failures back off exponentially: throttling, network, 5xx and
// malformed answers retry after U[0,1)·min(5 min, 2 s·2ⁿ) (full jitter, at
// least 1 s) and log a warning; access denied, invalid or expired source
// credentials, malformed or oversized policies, a disabled region and
// rejected web identity tokens are logged at error level and retried after
// U[½,1]·min(15 min, 1 min·2ⁿ), so a fix is picked up within minutes without
// hammering STS.
//
// During an outage the last good set is served until ServeMargin (5 minutes)
// before its real expiry, then Current returns ErrNoCredentials — never an
// expired or empty set, and never an extended expiry. Five minutes is what
// EC2 itself guarantees and the point below which the Go v1, JS v3 and Java v2
// SDKs treat credentials as expired anyway; a larger margin would shorten the
// time a host rides out an outage (at least 25 minutes for 1-hour sessions,
// up to 55). Clients that cached a set keep using it until their own refresh
// point; botocore's "static stability" may then sign with it for a few
// minutes past expiry, which fails with ExpiredToken instead of "no
// credentials" — during an outage either way.
//
// Run sleeps at most five minutes at a time and schedules in wall-clock
// time, since expiries are wall-clock and monotonic timers stop while a VM
// is paused.
//
// # Roles
//
// A Set holds one Refresher per configured credential set — the top-level
// role_arn and each distinct roles entry (entries with identical options
// share one) — keyed by the YAML key that gives it, and a callers.Policy that
// picks a caller's entry. For answers from memory which role a caller gets and
// the source of its credentials. Fetch makes every first attempt at once: at
// start it fails only when no role serves (a failing role's callers get 500
// while its refresher keeps trying in Run); on a reload (SetOptions.Previous)
// any new role that fails rejects the reload. A reload keeps the refreshers
// whose settings are unchanged, with their credentials, schedule and
// sessions: each refresher counts the Sets running it and stops when the
// last one does (Acquire lets the new Set take over first).
//
// A role with PerCaller (caller_source_identity) has one session per caller
// identity (callers.Caller.Key), with sts:SourceIdentity set to the caller's
// Name, made on the caller's first request and kept in an LRU bounded by
// MaxCallers; an evicted session stops refreshing. A caller's first
// credentials request waits up to SetOptions.FirstWait for its session.
//
// The Source a caller is given logs one audit line ("caller uid=… unit=…
// role=… access_key_id=…") the first time that caller is served each
// credential set, remembering at most 4096 callers per role.
package credentials
