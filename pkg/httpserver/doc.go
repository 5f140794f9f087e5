// Package httpserver serves HTTP/1.1 for the metadata endpoint: small
// requests without a body on long-lived keep-alive connections, as every
// AWS SDK sends them to 169.254.169.254.
//
// Requests are parsed by net/http's own parser (http.ReadRequest) and
// handled by any http.Handler, so the handler is the same code that
// net/http.Server would run. What this package replaces is the
// per-request machinery of http.Server that such an endpoint does not
// need and that made up most of the difference to a bare net/http server
// (test/bench): a goroutine that watches each request's connection for
// the client going away, the read deadlines armed and cleared around every
// request, a new response header map that is then copied, and sorting the
// headers on every response. Here each connection has one goroutine, one
// ResponseWriter and one header map reused by every request on it, and
// the connection limits (a first request header that never completes, idle
// keep-alive, a response the client does not read) are enforced by one
// goroutine per server that looks at every connection once a tick.
//
// Each response is buffered whole and sent with an exact Content-Length,
// never chunked, as EC2 answers; handlers that stream or hijack are not
// supported, and a request body the handler does not read is discarded
// (up to a limit, past which the connection is closed after the response).
package httpserver
