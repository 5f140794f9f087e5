package credentials

import (
	"context"
	"errors"
	"net"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Error classes, as State.LastErrorClass and Observer.RefreshFailed report
// them (and as metric label values).
const (
	// Transient: retried soon with capped exponential backoff.
	ClassThrottling      = "throttling"       // Throttling, RequestLimitExceeded, HTTP 429
	ClassNetwork         = "network"          // DNS, connect, TLS, timeouts
	ClassServer          = "server"           // HTTP 5xx, InternalFailure, IDPCommunicationError
	ClassInvalidResponse = "invalid_response" // no keys, or an expiry already inside the margin
	ClassUnknown         = "unknown"

	// Permanent until someone acts: long backoff and an error-level log.
	ClassAccessDenied      = "access_denied"      // trust policy or sts:AssumeRole permission
	ClassSourceCredentials = "source_credentials" // no/invalid/expired source keys
	ClassInvalidRequest    = "invalid_request"    // MalformedPolicyDocument, PackedPolicyTooLarge, ValidationError
	ClassRegionDisabled    = "region_disabled"    // STS not activated in this region
	ClassWebIdentity       = "web_identity"       // token file unreadable, or its JWT rejected/expired
	ClassCertificate       = "certificate"        // roles_anywhere certificate or key unreadable, mismatched, expired
)

// permanent reports whether a class needs an operator rather than a retry.
func permanent(class string) bool {
	switch class {
	case ClassAccessDenied, ClassSourceCredentials, ClassInvalidRequest, ClassRegionDisabled, ClassWebIdentity, ClassCertificate:
		return true
	}
	return false
}

// invalidResponseError is an STS answer that cannot be served.
type invalidResponseError struct{ msg string }

func (e *invalidResponseError) Error() string { return e.msg }

// tokenFileError is a failure to read the web identity token file.
type tokenFileError struct{ err error }

func (e *tokenFileError) Error() string { return "reading web_identity_token_file: " + e.err.Error() }
func (e *tokenFileError) Unwrap() error { return e.err }

// classify maps an STS call's error to a class. API error codes come first,
// as they are the most specific; then the HTTP status, then transport errors.
func classify(err error) string {
	// Errors of the Roles Anywhere source know their class.
	var own interface{ errorClass() string }
	if errors.As(err, &own) {
		return own.errorClass()
	}
	var (
		tf  *tokenFileError
		ir  *invalidResponseError
		sc  *SourceCredentialsError
		api smithy.APIError
		re  *awshttp.ResponseError
		se  *smithyhttp.RequestSendError
		ne  net.Error
	)
	switch {
	case errors.As(err, &tf):
		return ClassWebIdentity
	case errors.As(err, &ir):
		return ClassInvalidResponse
	case errors.As(err, &sc), errors.Is(err, errIMDSRefused):
		return ClassSourceCredentials
	case errors.As(err, &api):
		if c := classifyCode(api.ErrorCode()); c != "" {
			return c
		}
	}
	if errors.As(err, &re) {
		switch s := re.HTTPStatusCode(); {
		case s == 429:
			return ClassThrottling
		case s >= 500:
			return ClassServer
		case s == 401 || s == 403:
			return ClassAccessDenied
		}
	}
	if errors.As(err, &se) || errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return ClassNetwork
	}
	return ClassUnknown
}

func classifyCode(code string) string {
	switch code {
	case "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
		"RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
		"PriorRequestNotComplete", "SlowDown", "ProvisionedThroughputExceededException":
		return ClassThrottling
	case "InternalFailure", "InternalError", "InternalServerError", "ServiceUnavailable",
		"ServiceUnavailableException", "IDPCommunicationError", "RequestTimeout", "RequestTimeoutException":
		return ClassServer
	case "AccessDenied", "AccessDeniedException":
		return ClassAccessDenied
	case "InvalidClientTokenId", "SignatureDoesNotMatch", "IncompleteSignature",
		"UnrecognizedClientException", "ExpiredToken", "MissingAuthenticationToken",
		"InvalidAccessKeyId", "AuthFailure", "RequestExpired", "InvalidToken":
		return ClassSourceCredentials
	case "InvalidIdentityToken", "IDPRejectedClaim", "ExpiredTokenException":
		return ClassWebIdentity
	case "MalformedPolicyDocument", "PackedPolicyTooLarge", "ValidationError",
		"InvalidParameterValue", "InvalidParameterCombination", "MissingParameter", "InvalidAction":
		return ClassInvalidRequest
	case "RegionDisabledException":
		return ClassRegionDisabled
	}
	return ""
}
