// Package credentials obtains temporary credentials for one IAM role from STS
// and keeps them fresh in the background, so that the IMDS handler can serve
// them without ever calling STS on the request path.
package credentials
