package main

import (
	"bytes"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/imds-shim/imds-shim/pkg/imds"
)

// The floor stands for the least the daemon can send, so it must answer a
// credential GET with the daemon's own response headers: the same names
// and, but for the TTL that counts down and the length, the same values.
func TestFloorSendsTheDaemonsHeaders(t *testing.T) {
	src := &rotatingSource{}
	src.rotate(time.Hour)
	srv, err := imds.NewServer(imds.Config{RoleARN: benchRoleARN}, src, imds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	daemon := httptest.NewServer(srv)
	defer daemon.Close()
	req, _ := http.NewRequest(http.MethodPut, daemon.URL+"/latest/api/token", nil)
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "21600")
	tok := string(get(t, req, nil))
	req, _ = http.NewRequest(http.MethodGet, daemon.URL+"/latest/meta-data/iam/security-credentials/"+benchRole, nil)
	req.Header.Set("X-aws-ec2-metadata-token", tok)
	var want http.Header
	doc := get(t, req, &want)

	floor := httptest.NewServer(floorHandler(bytes.Repeat([]byte("x"), len(doc)), time.Now().Add(6*time.Hour)))
	defer floor.Close()
	req, _ = http.NewRequest(http.MethodGet, floor.URL+"/latest/meta-data/iam/security-credentials/"+benchRole, nil)
	var got http.Header
	body := get(t, req, &got)

	if g, w := slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)); !slices.Equal(g, w) {
		t.Fatalf("floor sends headers %q, the daemon %q", g, w)
	}
	for k, v := range want {
		switch k {
		case "Date":
		case "Content-Length":
			if got.Get(k) != strconv.Itoa(len(body)) || len(body) != len(doc) {
				t.Errorf("Content-Length %q for %d bytes, the daemon's document has %d", got.Get(k), len(body), len(doc))
			}
		case "X-Aws-Ec2-Metadata-Token-Ttl-Seconds":
			if n, err := strconv.Atoi(got.Get(k)); err != nil || n < 21590 || n > 21600 {
				t.Errorf("%s: %q, want about 21600 like the daemon's %q", k, got.Get(k), v)
			}
		default:
			if !slices.Equal(got[k], v) {
				t.Errorf("%s: floor %q, daemon %q", k, got[k], v)
			}
		}
	}
}

func get(t *testing.T, req *http.Request, h *http.Header) []byte {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %d %v", req.Method, req.URL, resp.StatusCode, err)
	}
	if h != nil {
		*h = resp.Header
	}
	return b
}

// -heap keeps what it asks for live across collections (give or take what
// else the test binary freed in between).
func TestKeepHeap(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	keepHeap(2048)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew < 2048<<10*9/10 {
		t.Errorf("live heap grew by %d bytes, want about 2 MiB", grew)
	}
	ballast = nil
}
