package httpserver

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// bufConn is a connection that reads a fixed input, then EOF, and records
// what is written to it.
type bufConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *bufConn) Read(p []byte) (int, error)         { return c.in.Read(p) }
func (c *bufConn) Write(p []byte) (int, error)        { return c.out.Write(p) }
func (c *bufConn) Close() error                       { return nil }
func (c *bufConn) LocalAddr() net.Addr                { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80} }
func (c *bufConn) RemoteAddr() net.Addr               { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000} }
func (c *bufConn) SetDeadline(time.Time) error        { return nil }
func (c *bufConn) SetReadDeadline(time.Time) error    { return nil }
func (c *bufConn) SetWriteDeadline(time.Time) error   { return nil }
func (c *bufConn) CloseWrite() error                  { return nil }
func (c *bufConn) responses() (*bufio.Reader, string) { return bufio.NewReader(&c.out), c.out.String() }

// Whatever a client sends, the server does not panic, and what it writes
// back is a sequence of well-framed HTTP/1.1 responses, at most one per
// request it could have read, each body exactly its Content-Length.
func FuzzConn(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: h\r\n\r\nHEAD /b HTTP/1.1\r\nHost: h\r\n\r\n",
		"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET http://x/y HTTP/1.1\r\nHost: z\r\n\r\n",
		"\r\n\r\n", "GET / HTTP/1.1\r\nHost: h\r\nX: \x00\r\n\r\n", "G",
	} {
		f.Add([]byte(s))
	}
	s := &Server{Handler: echo}
	s.start()
	f.Cleanup(func() { s.Close() })
	f.Fuzz(func(t *testing.T, in []byte) {
		bc := &bufConn{in: bytes.NewReader(in)}
		c := s.newConn(bc)
		c.serve()
		br, out := bc.responses()
		// The requests as the same parser reads them, for the methods
		// the responses answer (a HEAD response has no body).
		reqs := bufio.NewReader(bytes.NewReader(in))
		n := 0
		for {
			if _, err := br.Peek(1); errors.Is(err, io.EOF) {
				break
			}
			req, err := http.ReadRequest(reqs)
			if err != nil {
				req = nil
			} else {
				_, _ = io.Copy(io.Discard, req.Body)
			}
			resp, err := http.ReadResponse(br, req)
			if err != nil {
				t.Fatalf("response %d does not parse: %v\n%q", n, err, out)
			}
			if resp.ProtoMajor != 1 || resp.StatusCode < 200 || resp.StatusCode > 599 {
				t.Fatalf("response %d: %s %d", n, resp.Proto, resp.StatusCode)
			}
			if len(resp.TransferEncoding) > 0 {
				t.Fatalf("response %d is chunked", n)
			}
			if _, err := io.ReadAll(resp.Body); err != nil {
				t.Fatalf("response %d body: %v\n%q", n, err, out)
			}
			n++
			if n > bytes.Count(in, []byte("\n"))+1 {
				t.Fatalf("%d responses to %d lines of input", n, bytes.Count(in, []byte("\n")))
			}
		}
		if s.Tracked() != 0 {
			t.Fatalf("%d connections tracked after the connection ended", s.Tracked())
		}
	})
}
