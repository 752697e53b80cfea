package power

import (
	"errors"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// readAttr reads one sysfs attribute with a single bounded read. ok is false
// when it is absent or unreadable: no data, not an error.
func readAttr(path string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	buf := make([]byte, 4096)
	n, err := f.Read(buf)
	if err != nil && n == 0 {
		return "", false
	}
	return strings.TrimSpace(string(buf[:n])), true
}

func readInt(path string) *int64 {
	s, ok := readAttr(path)
	if !ok {
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return nil
	}
	return &v
}

// dirEntries lists a directory; a missing one is empty.
func dirEntries(path string) []string {
	entries, err := os.ReadDir(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return nil
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
