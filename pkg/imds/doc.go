// Package imds serves the EC2 instance metadata service (IMDS) API, as an
// http.Handler, so that unmodified AWS SDKs and
// the AWS CLI on an on-prem host find credentials, region and instance
// metadata exactly as they would on EC2.
//
// The handler implements IMDSv2 session tokens (stateless HMAC-SHA256
// tokens from crypto/hmac, so memory stays bounded whatever clients do; the
// MAC also covers an optional caller binding, so a token can be tied to
// the caller it was issued to), the required/optional token
// modes, the credential documents (legacy and security-credentials-extended),
// a small instance-metadata tree with on-prem defaults and overrides (typed
// config fields, a metadata directory, explicit path overrides), EC2's wire
// conventions (text/plain bodies, LF-joined listings without a trailing LF,
// XHTML error pages, Server: EC2ws), a source-address allowlist and a Host
// header check against DNS rebinding. Where AWS documents no status, the
// answers follow EC2 exchanges published in SDK and tool issue threads
// (403 for a token request through a proxy, 417 for Expect, doubled
// slashes, the instance-data host names, the events and public-keys
// entries); EC2-COMPATIBILITY.md lists them with their sources and the SDK
// code that depends on them, and fidelity_test.go checks each one.
//
// Every response carries an exact Content-Length (net/http never chunks
// it), so the handler can run in any net/http.Server; the daemon runs it
// in pkg/daemon's, with its connection limits.
//
// Credentials are read through CredentialSource and never fetched on the
// request path. The credential documents are rendered once per credential
// set.
//
// Without Config.Roles every caller gets Config.RoleARN, as on EC2. With
// Roles, the CredentialSource also implements Roles and is asked, for each
// request under meta-data/iam/ and for the identity document, which role the
// request's caller gets (the daemon identifies the caller once per
// connection and keeps it in the connection's context). Each role's answers
// (listing, iam/info with an instance profile ARN derived from the role, the
// identity document's accountId) are rendered when the configuration is
// applied. A caller sees only its own role: the listing names exactly it,
// another name is 404, and a caller with no role gets 404 under iam/, as an
// EC2 instance without an instance profile. Tokens are bound to the caller
// through Options.TokenBinding.
//
// Listen wraps a TCP listener so that every accepted connection carries the
// configured IP TTL / IPv6 hop limit, like EC2's PUT response hop limit.
package imds
