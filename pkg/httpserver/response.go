package httpserver

import (
	"bufio"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// response is the http.ResponseWriter of one connection, reset for each
// request: the header map and the body buffer are reused, so a request
// costs them no allocation.
type response struct {
	header http.Header
	status int
	body   []byte
	head   bool
	headN  int64    // bytes a HEAD handler wrote, for its Content-Length
	keys   []string // scratch for sorting header keys
}

func (w *response) reset(head bool) {
	clear(w.header)
	w.status = 0
	if cap(w.body) > 8<<10 { // keep no large buffer on an idle connection: one credential document fits
		w.body = nil
	}
	w.body = w.body[:0]
	w.head = head
	w.headN = 0
}

func (w *response) Header() http.Header { return w.header }

// WriteHeader records the status; the first call wins, as in net/http.
// 1xx informational responses are not supported and ignored.
func (w *response) WriteHeader(code int) {
	if w.status != 0 || code < 200 || code > 999 {
		return
	}
	w.status = code
}

// Write buffers the body; the response is sent whole when the handler
// returns. A HEAD response's body is discarded.
func (w *response) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.head {
		w.headN += int64(len(p))
	} else {
		w.body = append(w.body, p...)
	}
	return len(p), nil
}

// Headers the server writes itself.
var ownHeaders = map[string]bool{"Content-Length": true, "Connection": true, "Date": true, "Transfer-Encoding": true, "Trailer": true}

// writeTo writes the response: the status line, the handler's headers in
// sorted order, Date unless the handler set one, an exact Content-Length
// (for HEAD, the handler's), Connection when the connection closes or an
// HTTP/1.0 client keeps it, and the body.
func (w *response) writeTo(bw *bufio.Writer, req *http.Request, keepAlive bool, date string) {
	code := w.status
	if code == 0 {
		code = http.StatusOK
	}
	if req.ProtoAtLeast(1, 1) {
		bw.WriteString("HTTP/1.1 ")
	} else {
		bw.WriteString("HTTP/1.0 ")
	}
	var num [20]byte
	bw.Write(strconv.AppendInt(num[:0], int64(code), 10))
	bw.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		bw.WriteString(text)
	} else {
		bw.WriteString("status code ")
		bw.Write(strconv.AppendInt(num[:0], int64(code), 10))
	}
	bw.WriteString("\r\n")

	w.keys = w.keys[:0]
	for k := range w.header {
		if !ownHeaders[k] && validFieldName(k) {
			w.keys = append(w.keys, k)
		}
	}
	slices.Sort(w.keys)
	for _, k := range w.keys {
		for _, v := range w.header[k] {
			bw.WriteString(k)
			bw.WriteString(": ")
			writeFieldValue(bw, v)
			bw.WriteString("\r\n")
		}
	}
	if _, ok := w.header["Date"]; ok {
		for _, v := range w.header["Date"] {
			bw.WriteString("Date: ")
			writeFieldValue(bw, v)
			bw.WriteString("\r\n")
		}
	} else {
		bw.WriteString(date)
	}
	if bodyAllowed(code) {
		n := int64(len(w.body))
		ok := true
		if w.head {
			// The handler's Content-Length is the GET's body size; without
			// one, what it wrote is, as net/http counts it.
			n, ok = declaredLength(w.header)
			if !ok && w.headN > 0 {
				n, ok = w.headN, true
			}
		}
		if ok {
			bw.WriteString("Content-Length: ")
			bw.Write(strconv.AppendInt(num[:0], n, 10))
			bw.WriteString("\r\n")
		}
	}
	switch {
	case !keepAlive:
		bw.WriteString("Connection: close\r\n")
	case !req.ProtoAtLeast(1, 1):
		bw.WriteString("Connection: keep-alive\r\n")
	}
	bw.WriteString("\r\n")
	if !w.head && bodyAllowed(code) {
		bw.Write(w.body)
	}
}

func declaredLength(h http.Header) (int64, bool) {
	v := h["Content-Length"]
	if len(v) != 1 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[0], 10, 64)
	return n, err == nil && n >= 0
}

// bodyAllowed reports whether a response with this status may carry a
// body (RFC 9110: not 1xx, 204 or 304).
func bodyAllowed(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

// validFieldName reports whether k is an RFC 9110 token.
func validFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		b := k[i]
		if b <= ' ' || b >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, b) >= 0 {
			return false
		}
	}
	return true
}

// writeFieldValue writes v with CR and LF replaced by spaces and outer
// spaces trimmed, as net/http does, so that no value can end the header.
func writeFieldValue(bw *bufio.Writer, v string) {
	v = strings.Trim(v, " \t")
	if strings.ContainsAny(v, "\r\n") {
		v = strings.Map(func(r rune) rune {
			if r == '\r' || r == '\n' {
				return ' '
			}
			return r
		}, v)
	}
	bw.WriteString(v)
}
