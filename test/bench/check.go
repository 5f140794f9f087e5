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

// checkMain loads an IMDS endpoint over keep-alive connections and checks
// every answer: each token PUT must return a token, and each credential GET
// a complete, unexpired document. Every -every'th request is a PUT for a
// fresh token, so the run uses requests/every distinct tokens.
func checkMain(args []string) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	addr := fs.String("addr", "", "host:port to connect to")
	host := fs.String("host", "169.254.169.254", "Host header")
	role := fs.String("role", "", "role name under security-credentials/")
	conns := fs.Int("c", 8, "connections")
	requests := fs.Int64("requests", 0, "stop after this many requests (0: run for -duration)")
	duration := fs.Duration("duration", 10*time.Second, "how long to run when -requests is 0")
	every := fs.Int64("every", 1000, "every n-th request fetches a new token")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *role == "" || *every < 1 {
		return errors.New("check needs -addr, -role and -every >= 1")
	}
	var (
		next     atomic.Int64
		res      checkResult
		mu       sync.Mutex
		keys     = map[string]bool{}
		deadline = time.Now().Add(*duration)
		wg       sync.WaitGroup
	)
	putReq := []byte("PUT /latest/api/token HTTP/1.1\r\nHost: " + *host +
		"\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\n\r\n")
	getPrefix := "GET /latest/meta-data/iam/security-credentials/" + *role + " HTTP/1.1\r\nHost: " + *host +
		"\r\nX-aws-ec2-metadata-token: "
	start := time.Now()
	for range *conns {
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
				if *requests > 0 && i >= *requests || *requests == 0 && time.Now().After(deadline) {
					break
				}
				local.Requests++
				if c == nil {
					var err error
					if c, err = dial(*addr); err != nil {
						fail(err)
						continue
					}
				}
				if getReq == nil || i%*every == 0 {
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
				now := time.Now()
				var d credDoc
				if err := json.Unmarshal(body, &d); err != nil || d.Code != "Success" || d.Type != "AWS-HMAC" ||
					d.AccessKeyId == "" || d.SecretAccessKey == "" || d.Token == "" {
					local.Empty++
					continue
				}
				exp, err1 := time.Parse(time.RFC3339, d.Expiration)
				upd, err2 := time.Parse(time.RFC3339, d.LastUpdated)
				if err1 != nil || err2 != nil {
					local.Empty++
					continue
				}
				if !exp.After(now) {
					local.Expired++
				}
				if age := now.Sub(upd).Milliseconds(); age > local.MaxAgeMS {
					local.MaxAgeMS = age
				}
				lkeys[d.AccessKeyId] = true
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
	return json.NewEncoder(os.Stdout).Encode(res)
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
