package mqtt

// The local broker's users: a password file in mosquitto's password_file
// format, written with mosquitto_passwd, so one file serves either broker.
// Each line is `user:hash`; the hashes mosquitto_passwd writes are
//
//	$7$<iterations>$<salt>$<hash>  PBKDF2-HMAC-SHA512 (mosquitto ≥ 2.0)
//	$6$<salt>$<hash>               SHA-512 of password‖salt (mosquitto 1.x)
//
// with salt and hash in standard base64. Plain-text passwords (a file not
// yet converted with `mosquitto_passwd -U`) are refused, not compared.

import (
	"bufio"
	"bytes"
	"crypto/pbkdf2"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Users are the entries of a password file: user → hash.
type Users map[string]passwordHash

type passwordHash struct {
	iterations int // 0: the $6$ scheme
	salt, hash []byte
}

// ReadUsers reads a mosquitto password file.
func ReadUsers(path string) (Users, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	users := Users{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("users file %s:%d: want user:hash", path, n)
		}
		h, err := parseHash(hash)
		if err != nil {
			return nil, fmt.Errorf("users file %s:%d (%s): %w", path, n, user, err)
		}
		users[user] = h
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("users file %s: no users", path)
	}
	return users, nil
}

func parseHash(s string) (passwordHash, error) {
	f := strings.Split(s, "$")
	b64 := base64.StdEncoding
	switch {
	case len(f) == 5 && f[0] == "" && f[1] == "7":
		it, err := strconv.Atoi(f[2])
		if err != nil || it < 1 {
			return passwordHash{}, fmt.Errorf("bad iteration count %q", f[2])
		}
		salt, err1 := b64.DecodeString(f[3])
		hash, err2 := b64.DecodeString(f[4])
		if err1 != nil || err2 != nil || len(hash) == 0 {
			return passwordHash{}, fmt.Errorf("bad $7$ salt or hash")
		}
		return passwordHash{iterations: it, salt: salt, hash: hash}, nil
	case len(f) == 4 && f[0] == "" && f[1] == "6":
		salt, err1 := b64.DecodeString(f[2])
		hash, err2 := b64.DecodeString(f[3])
		if err1 != nil || err2 != nil || len(hash) != sha512.Size {
			return passwordHash{}, fmt.Errorf("bad $6$ salt or hash")
		}
		return passwordHash{salt: salt, hash: hash}, nil
	}
	return passwordHash{}, fmt.Errorf("not a mosquitto_passwd hash ($7$ or $6$); convert plain passwords with mosquitto_passwd -U")
}

// Check reports whether password is user's.
func (u Users) Check(user string, password []byte) bool {
	h, ok := u[user]
	if !ok {
		return false
	}
	var got []byte
	if h.iterations > 0 {
		var err error
		if got, err = pbkdf2.Key(sha512.New, string(password), h.salt, h.iterations, len(h.hash)); err != nil {
			return false
		}
	} else {
		sum := sha512.Sum512(append(append([]byte(nil), password...), h.salt...))
		got = sum[:]
	}
	return subtle.ConstantTimeCompare(got, h.hash) == 1
}
