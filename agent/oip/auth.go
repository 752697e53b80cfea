package oip

import (
	"crypto/subtle"
	"net"
	"net/http"
	"strings"
)

// requireToken refuses a request without "Authorization: Bearer TOKEN"
// (401, with the challenge RFC 6750 asks for). The compare takes the same
// time whatever the bytes, so timing does not reveal a prefix.
func requireToken(token []byte, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), token) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="edge-agent"`)
			writeError(w, http.StatusUnauthorized, "a bearer token is required ([http] token_file)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// IsLoopback reports whether listen address addr ("host:port") accepts
// only this machine's connections: an empty host, 0.0.0.0 or [::] listen
// on every interface; "localhost" and loopback IPs do not.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
