package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// checkResult is what one check run found; run reads it as JSON.
type checkResult struct {
	Requests     int64   `json:"requests"`
	Puts         int64   `json:"puts"`
	Gets         int64   `json:"gets"`
	Errors       int64   `json:"errors"`  // transport errors and non-200 answers
	Expired      int64   `json:"expired"` // Expiration not after the time of receipt
	Empty        int64   `json:"empty"`   // a missing or empty field, or not Code=Success
	DistinctKeys int     `json:"distinct_keys"`
	MaxAgeMS     int64   `json:"max_age_ms"` // oldest LastUpdated seen, relative to receipt
	Seconds      float64 `json:"seconds"`
	FirstError   string  `json:"first_error,omitempty"`
}

// credDoc is the credential document as SDKs read it.
type credDoc struct {
	Code, Type, AccessKeyId, SecretAccessKey, Token, Expiration, LastUpdated string
}

// checkOpts says what a check run loads and for how long.
type checkOpts struct {
	addr, host, role string
	conns            int
	requests         int64         // stop after this many; 0: run for duration
	duration         time.Duration // used when requests is 0
	every            int64         // every n-th request fetches a new token
}

// checkMain loads an IMDS endpoint over keep-alive connections and checks
// every answer: each token PUT must return a token, and each credential GET
// a complete, unexpired document. Every -every'th request is a PUT for a
// fresh token, so the run uses requests/every distinct tokens.
func checkMain(args []string) error {
	var o checkOpts
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.StringVar(&o.addr, "addr", "", "host:port to connect to")
	fs.StringVar(&o.host, "host", "169.254.169.254", "Host header")
	fs.StringVar(&o.role, "role", "", "role name under security-credentials/")
	fs.IntVar(&o.conns, "c", 8, "connections")
	fs.Int64Var(&o.requests, "requests", 0, "stop after this many requests (0: run for -duration)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long to run when -requests is 0")
	fs.Int64Var(&o.every, "every", 1000, "every n-th request fetches a new token")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.addr == "" || o.role == "" || o.every < 1 || o.conns < 1 {
		return errors.New("check needs -addr, -role, -c >= 1 and -every >= 1")
	}
	return json.NewEncoder(os.Stdout).Encode(check(o))
}

// Verdicts on one credential document.
const (
	docOK      = "ok"
	docEmpty   = "empty"   // not JSON, not Code=Success, or a field missing or empty
	docExpired = "expired" // Expiration not after the time of receipt
)

// inspect judges a credential document received at now, and returns its
// access key ID and age (now - LastUpdated) when it is usable.
func inspect(body []byte, now time.Time) (verdict, key string, age time.Duration) {
	var d credDoc
	if err := json.Unmarshal(body, &d); err != nil || d.Code != "Success" || d.Type != "AWS-HMAC" ||
		d.AccessKeyId == "" || d.SecretAccessKey == "" || d.Token == "" {
		return docEmpty, "", 0
	}
	exp, err1 := time.Parse(time.RFC3339, d.Expiration)
	upd, err2 := time.Parse(time.RFC3339, d.LastUpdated)
	if err1 != nil || err2 != nil {
		return docEmpty, "", 0
	}
	if !exp.After(now) {
		return docExpired, d.AccessKeyId, now.Sub(upd)
	}
	return docOK, d.AccessKeyId, now.Sub(upd)
}

func check(o checkOpts) checkResult {
	var (
		next     atomic.Int64
		res      checkResult
		mu       sync.Mutex
		keys     = map[string]bool{}
		deadline = time.Now().Add(o.duration)
		wg       sync.WaitGroup
	)
	putReq := []byte("PUT /latest/api/token HTTP/1.1\r\nHost: " + o.host +
		"\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\n\r\n")
	getPrefix := "GET /latest/meta-data/iam/security-credentials/" + o.role + " HTTP/1.1\r\nHost: " + o.host +
		"\r\nX-aws-ec2-metadata-token: "
	start := time.Now()
	for range o.conns {
		wg.Go(func() {
			var (
				c      *client
				getReq []byte
				local  checkResult
				lkeys  = map[string]bool{}
				fail   = func(err error) {
					local.Errors++
					if local.FirstError == "" {
						local.FirstError = err.Error()
					}
					if c != nil {
						c.close()
						c = nil
					}
				}
			)
			for {
				i := next.Add(1) - 1
				if o.requests > 0 && i >= o.requests || o.requests == 0 && time.Now().After(deadline) {
					break
				}
				local.Requests++
				if c == nil {
					var err error
					if c, err = dial(o.addr); err != nil {
						fail(err)
						continue
					}
				}
				if getReq == nil || i%o.every == 0 {
					local.Puts++
					status, body, err := c.do(putReq, http.MethodPut)
					if err == nil && (status != 200 || len(body) == 0) {
						err = fmt.Errorf("token PUT: status %d, %d bytes", status, len(body))
					}
					if err != nil {
						fail(err)
						getReq = nil
						continue
					}
					getReq = append([]byte(getPrefix+string(body)), "\r\n\r\n"...)
					continue
				}
				local.Gets++
				status, body, err := c.do(getReq, http.MethodGet)
				if err == nil && status != 200 {
					err = fmt.Errorf("credentials GET: status %d", status)
				}
				if err != nil {
					fail(err)
					continue
				}
				verdict, key, age := inspect(body, time.Now())
				switch verdict {
				case docEmpty:
					local.Empty++
					continue
				case docExpired:
					local.Expired++
				}
				local.MaxAgeMS = max(local.MaxAgeMS, age.Milliseconds())
				lkeys[key] = true
			}
			if c != nil {
				c.close()
			}
			mu.Lock()
			defer mu.Unlock()
			res.Requests += local.Requests
			res.Puts += local.Puts
			res.Gets += local.Gets
			res.Errors += local.Errors
			res.Expired += local.Expired
			res.Empty += local.Empty
			res.MaxAgeMS = max(res.MaxAgeMS, local.MaxAgeMS)
			if res.FirstError == "" {
				res.FirstError = local.FirstError
			}
			for k := range lkeys {
				keys[k] = true
			}
		})
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.DistinctKeys = len(keys)
	return res
}

// client is one keep-alive HTTP/1.1 connection with pre-rendered requests,
// so the load generator spends its CPU on the server's answers, and
// net/http's own parser reads them.
type client struct {
	conn net.Conn
	br   *bufio.Reader
	req  map[string]*http.Request
}

func dial(addr string) (*client, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	return &client{conn: conn, br: bufio.NewReaderSize(conn, 8<<10), req: map[string]*http.Request{
		http.MethodGet: {Method: http.MethodGet}, http.MethodPut: {Method: http.MethodPut},
	}}, nil
}

func (c *client) do(raw []byte, method string) (int, []byte, error) {
	_ = c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.conn.Write(raw); err != nil {
		return 0, nil, fmt.Errorf("writing request: %w", err)
	}
	resp, err := http.ReadResponse(c.br, c.req[method])
	if err != nil {
		return 0, nil, fmt.Errorf("reading response: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, nil, fmt.Errorf("reading body: %w", err)
	}
	if resp.Close {
		return 0, nil, errors.New("server closed the connection")
	}
	return resp.StatusCode, body, nil
}

func (c *client) close() { _ = c.conn.Close() }
