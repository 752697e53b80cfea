package scripts_test

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

func TestUnitVerifies(t *testing.T) {
	prefix := t.TempDir()
	os.MkdirAll(filepath.Join(prefix, "bin"), 0o755)
	self, _ := os.ReadFile("/bin/true")
	os.WriteFile(filepath.Join(prefix, "bin", "edge-agent"), self, 0o755)
	tmpl, err := os.ReadFile("edge-agent.service.in")
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "edge-agent.service")
	os.WriteFile(unit, []byte(strings.ReplaceAll(string(tmpl), "@PREFIX@", prefix)), 0o644)
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", unit).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, want := range []string{"Type=notify", "WatchdogSec=", "Restart=on-failure", "NoNewPrivileges=yes",
		"ProtectSystem=strict", "ProtectHome=yes", "StateDirectory=edge-agent", "PrivateTmp=yes", "User=edge-agent",
		"MemoryHigh=", "MemoryMax=", "CPUWeight=", "IOWeight=", "LoadCredential=mqtt-password",
		"CapabilityBoundingSet=\n", "AmbientCapabilities=\n", "ProtectProc=invisible", "UMask=0077",
		"SystemCallFilter=@system-service", "SystemCallErrorNumber=EPERM"} {
		if !strings.Contains(string(tmpl), want) {
			t.Errorf("unit lacks %s", want)
		}
	}
}

// fakeBundle is a bundle's layout with a stand-in binary and library: the
// scripts are under test here, not the binary (cross/check.sh runs that).
func fakeBundle(t *testing.T, binary string) string {
	t.Helper()
	b := t.TempDir()
	files := map[string]string{
		"bin/edge-agent":                           binary,
		"lib/x86_64-linux-gnu/libfake.so.1.2":      "library",
		"share/edge-agent/README.md":               "readme",
		"share/edge-agent/edge-agent.service.in":   read(t, "edge-agent.service.in"),
		"share/edge-agent/edge-agent.example.toml": read(t, "../edge-agent.example.toml"),
		"install.sh":   read(t, "install.sh"),
		"uninstall.sh": read(t, "uninstall.sh"),
	}
	var sums []string
	for name, content := range files {
		p := filepath.Join(b, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") || name == "bin/edge-agent" {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		sums = append(sums, fmt.Sprintf("%x  %s", sha256.Sum256([]byte(content)), name))
	}
	os.Symlink("libfake.so.1.2", filepath.Join(b, "lib/x86_64-linux-gnu/libfake.so.1"))
	sort.Strings(sums)
	os.WriteFile(filepath.Join(b, "SHA256SUMS"), []byte(strings.Join(sums, "\n")+"\n"), 0o644)
	return b
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func script(t *testing.T, bundle, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command("bash", append([]string{filepath.Join(bundle, name)}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// tree maps every file under root to its content hash and mode.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, _ := os.Lstat(p)
		if info.Mode()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			out[rel] = "-> " + target
			return nil
		}
		b, _ := os.ReadFile(p)
		out[rel] = fmt.Sprintf("%x %v %v", sha256.Sum256(b), info.Mode(), info.ModTime().UnixNano())
		return nil
	})
	return out
}

func TestInstallIdempotentAndUninstall(t *testing.T) {
	root := t.TempDir()
	bundle := fakeBundle(t, "binary v1")
	if out := script(t, bundle, "install.sh", "--root", root); !strings.Contains(out, "installed") {
		t.Fatalf("first install: %s", out)
	}
	unit := read(t, filepath.Join(root, "etc/systemd/system/edge-agent.service"))
	if !strings.Contains(unit, "ExecStart=/opt/edge-agent/bin/edge-agent run") || strings.Contains(unit, "@PREFIX@") {
		t.Fatalf("unit not rendered:\n%s", unit)
	}
	if cfg := read(t, filepath.Join(root, "etc/edge-agent/edge-agent.toml")); !strings.Contains(cfg, `state_dir = "/var/lib/edge-agent"`) {
		t.Fatalf("config: %s", cfg)
	}
	if fi, err := os.Stat(filepath.Join(root, "etc/edge-agent/mqtt-password")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file: %v %v", err, fi)
	}
	if l, _ := os.Readlink(filepath.Join(root, "opt/edge-agent/lib/x86_64-linux-gnu/libfake.so.1")); l != "libfake.so.1.2" {
		t.Fatalf("soname link %q", l)
	}

	before := tree(t, root)
	if out := script(t, bundle, "install.sh", "--root", root); !strings.Contains(out, "up to date") {
		t.Fatalf("second install: %s", out)
	}
	if after := tree(t, root); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatal("second install changed files")
	}

	// An edited configuration survives an upgrade; the binary is replaced.
	os.WriteFile(filepath.Join(root, "etc/edge-agent/edge-agent.toml"), []byte("log_level = \"debug\"\n"), 0o644)
	upgrade := fakeBundle(t, "binary v2")
	script(t, upgrade, "install.sh", "--root", root)
	if read(t, filepath.Join(root, "opt/edge-agent/bin/edge-agent")) != "binary v2" ||
		read(t, filepath.Join(root, "etc/edge-agent/edge-agent.toml")) != "log_level = \"debug\"\n" {
		t.Fatal("upgrade did not replace the binary or overwrote the configuration")
	}

	os.MkdirAll(filepath.Join(root, "var/lib/edge-agent"), 0o750)
	os.WriteFile(filepath.Join(root, "var/lib/edge-agent/edge-agent.db"), []byte("state"), 0o600)
	script(t, upgrade, "uninstall.sh", "--root", root)
	for _, gone := range []string{"opt/edge-agent", "etc/systemd/system/edge-agent.service"} {
		if _, err := os.Stat(filepath.Join(root, gone)); err == nil {
			t.Errorf("%s still there after uninstall", gone)
		}
	}
	for _, kept := range []string{"var/lib/edge-agent/edge-agent.db", "etc/edge-agent/edge-agent.toml"} {
		if _, err := os.Stat(filepath.Join(root, kept)); err != nil {
			t.Errorf("%s not kept: %v", kept, err)
		}
	}
	script(t, upgrade, "uninstall.sh", "--root", root, "--purge")
	for _, gone := range []string{"var/lib/edge-agent", "etc/edge-agent"} {
		if _, err := os.Stat(filepath.Join(root, gone)); err == nil {
			t.Errorf("%s still there after --purge", gone)
		}
	}
	// A tampered bundle is refused.
	bad := fakeBundle(t, "binary v3")
	os.WriteFile(filepath.Join(bad, "bin/edge-agent"), []byte("tampered"), 0o755)
	if out, err := exec.Command("bash", filepath.Join(bad, "install.sh"), "--root", t.TempDir()).CombinedOutput(); err == nil || !strings.Contains(string(out), "checksums") {
		t.Fatalf("tampered bundle: %v %s", err, out)
	}
}

// resolve runs resolve_runtime from runtime-resolve.sh with stand-in apt
// functions: packages maps a suite to the names it carries, capi lists the
// packages whose library exports the C API.
func resolve(t *testing.T, suites string, packages map[string][]string, capi ...string) (string, string, error) {
	t.Helper()
	var script strings.Builder
	script.WriteString(". ./runtime-resolve.sh\nsuite_packages() {\n  case $1 in\n")
	for s, names := range packages {
		fmt.Fprintf(&script, "  %s) printf '%%s\\n' %s ;;\n", s, strings.Join(names, " "))
	}
	script.WriteString("  esac\n}\ntry_runtime() {\n  echo \"try $1/$2\" >&2\n  case $2 in\n")
	for _, p := range capi {
		fmt.Fprintf(&script, "  %s) return 0 ;;\n", p)
	}
	script.WriteString("  esac\n  return 1\n}\nresolve_runtime " + suites + "\n")
	cmd := exec.Command("bash", "-c", script.String())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), stderr.String(), err
}

// The runtime is found by pattern, newest first, across suites in order,
// skipping packages whose library lacks the C API; with none, the error
// names the way to bring one's own.
func TestRuntimeResolution(t *testing.T) {
	all := []string{"libtensorflow-lite-dev", "libtensorflow-lite2.14.1", "libtensorflow-lite2.16.1-dbgsym", "libtensorflow-lite2.16.1", "libtensorflow-lite2.9.3"}
	cases := []struct {
		name     string
		packages map[string][]string
		capi     []string
		want     string
		tries    []string
	}{
		{"newest with the C API", map[string][]string{"sid": all}, []string{"libtensorflow-lite2.14.1", "libtensorflow-lite2.16.1"},
			"sid libtensorflow-lite2.16.1", []string{"try sid/libtensorflow-lite2.16.1"}},
		{"newer one without the C API is skipped", map[string][]string{"sid": all}, []string{"libtensorflow-lite2.14.1", "libtensorflow-lite2.9.3"},
			"sid libtensorflow-lite2.14.1", []string{"try sid/libtensorflow-lite2.16.1", "try sid/libtensorflow-lite2.14.1"}},
		{"sid has none: forky", map[string][]string{"sid": {"libtensorflow-lite-dev"}, "forky": {"libtensorflow-lite2.20.0"}}, []string{"libtensorflow-lite2.20.0"},
			"forky libtensorflow-lite2.20.0", []string{"try forky/libtensorflow-lite2.20.0"}},
		{"then experimental", map[string][]string{"forky": {"libtensorflow-lite2.12.0"}, "experimental": {"libtensorflow-lite2.21.1"}}, []string{"libtensorflow-lite2.21.1"},
			"experimental libtensorflow-lite2.21.1", []string{"try forky/libtensorflow-lite2.12.0", "try experimental/libtensorflow-lite2.21.1"}},
	}
	for _, c := range cases {
		got, stderr, err := resolve(t, "sid forky experimental", c.packages, c.capi...)
		if err != nil || got != c.want {
			t.Errorf("%s: got %q (%v), want %q\n%s", c.name, got, err, c.want, stderr)
		}
		if tries := strings.Split(strings.TrimSpace(stderr), "\n"); !slices.Equal(tries, c.tries) {
			t.Errorf("%s: tried %q, want %q", c.name, stderr, c.tries)
		}
	}
	got, stderr, err := resolve(t, "sid forky experimental", map[string][]string{"sid": {"libtensorflow-lite2.16.1"}})
	if err == nil || got != "" {
		t.Fatalf("nothing usable: got %q, %v", got, err)
	}
	for _, want := range []string{"TFLITE_LIB_DIR", "TFLITE_INCLUDE_DIR", "sid/libtensorflow-lite2.16.1", "sid forky experimental"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("the error does not mention %s:\n%s", want, stderr)
		}
	}
}

// exports_c_api tells a library with the TFLite C API from one without,
// on libraries built here.
func TestExportsCAPI(t *testing.T) {
	dir := t.TempDir()
	build := func(name, src string) string {
		c := filepath.Join(dir, name+".c")
		so := filepath.Join(dir, name+".so")
		if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("gcc", "-shared", "-fPIC", "-o", so, c).CombinedOutput(); err != nil {
			t.Fatalf("gcc: %v\n%s", err, out)
		}
		return so
	}
	full := build("full", "void TfLiteModelCreate(void){}\nvoid TfLiteInterpreterCreate(void){}\nvoid TfLiteInterpreterInvoke(void){}\nvoid TfLiteInterpreterResetVariableTensors(void){}\n")
	cxxOnly := build("cxx", "void TfLiteModelCreate(void){}\nvoid other(void){}\n")
	check := func(lib string) error {
		return exec.Command("bash", "-c", `. ./runtime-resolve.sh && exports_c_api "$1"`, "_", lib).Run()
	}
	if err := check(full); err != nil {
		t.Errorf("a library with the C API: %v", err)
	}
	if err := check(cxxOnly); err == nil {
		t.Error("a library without the C API passed")
	}
	if err := check(filepath.Join(dir, "missing.so")); err == nil {
		t.Error("a missing library passed")
	}
}

// unitSection returns the lines of one [section] of the unit template.
func unitSection(t *testing.T, name string) []string {
	t.Helper()
	var out []string
	in := false
	for _, l := range strings.Split(read(t, "edge-agent.service.in"), "\n") {
		if strings.HasPrefix(l, "[") {
			in = l == "["+name+"]"
			continue
		}
		if in && l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// A unit that keeps failing stops being restarted: the start limit is a
// [Unit] setting (systemd ignores it, with a warning, under [Service]) and
// must be reachable with RestartSec=: Burst starts fit in the interval.
func TestUnitStartLimit(t *testing.T) {
	unit := strings.Join(unitSection(t, "Unit"), "\n")
	for _, want := range []string{"StartLimitIntervalSec=10min", "StartLimitBurst=5"} {
		if !strings.Contains(unit, want) {
			t.Errorf("[Unit] lacks %s:\n%s", want, unit)
		}
	}
	if svc := strings.Join(unitSection(t, "Service"), "\n"); !strings.Contains(svc, "RestartSec=2s") || strings.Contains(svc, "StartLimit") {
		t.Errorf("[Service]: want RestartSec=2s and no StartLimit*:\n%s", svc)
	}
}

// The sandbox keeps what the agent needs: the network (a remote broker)
// and AF_UNIX (sd_notify), the whole /proc (meminfo, loadavg, stat), and
// the accelerators' devices (no PrivateDevices=).
func TestUnitSandboxKeepsWhatTheAgentNeeds(t *testing.T) {
	svc := unitSection(t, "Service")
	if !slices.Contains(svc, "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6") {
		t.Error("RestrictAddressFamilies= is not AF_UNIX AF_INET AF_INET6")
	}
	for _, l := range svc {
		for _, bad := range []string{"ProcSubset=", "PrivateDevices=", "PrivateNetwork=", "IPAddressDeny="} {
			if strings.HasPrefix(l, bad) {
				t.Errorf("%s: the agent needs what it takes away (docs/systemd.md)", l)
			}
		}
	}
	for _, want := range []string{"DeviceAllow=char-usb_device rw", "DeviceAllow=char-apex rw"} {
		if !slices.Contains(svc, want) {
			t.Errorf("lacks %s", want)
		}
	}
}

// --root installs an image: systemd is never asked anything, even where
// systemctl exists; an existing password file is kept as it is.
func TestInstallRootNeverTouchesSystemd(t *testing.T) {
	bin := t.TempDir()
	calls := filepath.Join(t.TempDir(), "calls")
	for _, name := range []string{"systemctl", "journalctl", "useradd"} {
		fake := fmt.Sprintf("#!/bin/sh\necho %s \"$@\" >>%s\n", name, calls)
		if err := os.WriteFile(filepath.Join(bin, name), []byte(fake), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc/edge-agent"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/edge-agent/mqtt-password"), []byte("s3cret\n"), 0o600)
	cmd := exec.Command("bash", filepath.Join(fakeBundle(t, "binary"), "install.sh"), "--root", root)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("install --root: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(calls); err == nil {
		t.Errorf("--root ran: %s", b)
	}
	if pw := read(t, filepath.Join(root, "etc/edge-agent/mqtt-password")); pw != "s3cret\n" {
		t.Errorf("the password file was rewritten: %q", pw)
	}
}

// The configuration file is named the same by the installer, the unit and
// the README (a user copies the README's --config path).
func TestConfigPathAgrees(t *testing.T) {
	const conf = "/etc/edge-agent/edge-agent.toml"
	if !strings.Contains(read(t, "install.sh"), "/etc/edge-agent/edge-agent.toml") {
		t.Errorf("install.sh does not write %s", conf)
	}
	if !slices.Contains(unitSection(t, "Service"), "ExecStart=@PREFIX@/bin/edge-agent run --config "+conf) {
		t.Errorf("the unit does not run with --config %s", conf)
	}
	for _, f := range []string{"../README.md", "../edge-agent.example.toml"} {
		for _, m := range regexp.MustCompile(`/etc/edge-agent/[A-Za-z0-9_.-]+\.toml`).FindAllString(read(t, f), -1) {
			if m != conf {
				t.Errorf("%s names %s; the installer writes %s", f, m, conf)
			}
		}
	}
}

// uninstall.sh removes the prefix whole, so it refuses one that is not an
// absolute folder below /, before it touches anything.
func TestUninstallRefusesABadPrefix(t *testing.T) {
	bundle := fakeBundle(t, "binary")
	root := t.TempDir()
	script(t, bundle, "install.sh", "--root", root)
	for _, p := range []string{"/", "//", "opt/edge-agent", "/opt/../", ""} {
		out, err := exec.Command("bash", filepath.Join(bundle, "uninstall.sh"), "--root", root, "--prefix", p).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--prefix must be") {
			t.Errorf("--prefix %q: %v %s", p, err, out)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "opt/edge-agent/bin/edge-agent")); err != nil {
		t.Fatalf("a refused uninstall removed files: %v", err)
	}
}
