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
// never chunked, as EC2 answers. What a handler sees differs from
// net/http.Server in ways the metadata handler does not depend on
// (TestConformanceWithNetHTTP holds the wire behaviour to net/http's):
//   - no streaming, flushing, hijacking, trailers or 1xx responses; header
//     changes after Write still apply, since nothing is sent until the
//     handler returns;
//   - no Content-Type sniffing: a handler sets its own;
//   - the request context carries http.LocalAddrContextKey but is not
//     canceled when the client goes away;
//   - no 100 Continue: a request that expects one gets its answer and the
//     connection closes; closing the request body never reads on, and
//     what a handler leaves unread is discarded up to 64 KiB, past which
//     the connection closes after the response;
//   - an absolute-form request line names the host, and a missing Host
//     header is then not refused (http.ReadRequest drops the header).
package httpserver
