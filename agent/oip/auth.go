package oip

import (
	"crypto/subtle"
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
