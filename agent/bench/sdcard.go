package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// An emulated SD card, for real: an ext4 image on a loop device with
// direct I/O (so the image file's own page cache never serves a read),
// whose reads the cgroup v1 blkio controller throttles to the card's rate.
// The bench process joins that cgroup while it measures, so naive and the
// agent (in-process or as child processes) read everything they read
// before their first answer at the card's rate. Needs root, losetup,
// mkfs.ext4 and the blkio controller; without them the rows say why they
// were not measured.

// sdRateDefault is a typical SD card's sequential read rate (bytes/s); the
// policies section's simulated card uses the same.
const sdRateDefault = 25e6

const blkioRoot = "/sys/fs/cgroup/blkio"

// SDInfo says how the SD card rows were measured, or why they were not.
type SDInfo struct {
	// Rate is the throttled read rate, bytes/s.
	Rate float64
	// Measured is a cold read of the largest model through the card, bytes/s:
	// what the throttle gave (a check that it works).
	Measured float64
	// NotMeasured is why the rows are missing ("" when they were measured).
	NotMeasured string
}

type sdStorage struct {
	dir              string // the card's copy of the models
	image, mnt, loop string
	cgroup, prev     string // the throttled blkio cgroup, and the one we left
}

// newSDStorage makes the card in work with a copy of the models folder.
// On error everything made so far is undone.
func newSDStorage(ctx context.Context, work, models string, rate float64) (_ *sdStorage, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root (loop device, mount, blkio cgroup)")
	}
	if _, err := os.Stat(filepath.Join(blkioRoot, "blkio.throttle.read_bps_device")); err != nil {
		return nil, fmt.Errorf("no cgroup v1 blkio controller: %w", err)
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found: %w", tool, err)
		}
	}
	s := &sdStorage{image: filepath.Join(work, "sdcard.img"), mnt: filepath.Join(work, "sdcard")}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	size, err := folderSize(models)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(s.image, nil, 0o600); err != nil {
		return nil, err
	}
	if err := os.Truncate(s.image, 2*size+32<<20); err != nil {
		return nil, err
	}
	if err := run(ctx, "mkfs.ext4", "-q", "-F", s.image); err != nil {
		return nil, err
	}
	out, err := exec.CommandContext(ctx, "losetup", "--find", "--show", "--direct-io=on", s.image).Output()
	if err != nil {
		return nil, fmt.Errorf("losetup: %w", err)
	}
	s.loop = strings.TrimSpace(string(out))
	if err := os.MkdirAll(s.mnt, 0o755); err != nil {
		return nil, err
	}
	if err := run(ctx, "mount", s.loop, s.mnt); err != nil {
		return nil, err
	}
	s.dir = filepath.Join(s.mnt, "models")
	if err := copyFolder(models, s.dir); err != nil {
		return nil, err
	}
	unix.Sync() // the copy is written before reads are throttled and timed
	var st unix.Stat_t
	if err := unix.Stat(s.loop, &st); err != nil {
		return nil, err
	}
	s.cgroup = filepath.Join(blkioRoot, fmt.Sprintf("edge-agent-bench-%d", os.Getpid()))
	if err := os.Mkdir(s.cgroup, 0o755); err != nil {
		return nil, err
	}
	rule := fmt.Sprintf("%d:%d %d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)), int64(rate))
	if err := os.WriteFile(filepath.Join(s.cgroup, "blkio.throttle.read_bps_device"), []byte(rule), 0o644); err != nil {
		return nil, fmt.Errorf("blkio throttle %q: %w", rule, err)
	}
	if s.prev, err = ownBlkioCgroup(); err != nil {
		return nil, err
	}
	return s, nil
}

// enter moves this process (every thread) into the throttled cgroup;
// leave moves it back.
func (s *sdStorage) enter() error { return joinCgroup(s.cgroup) }
func (s *sdStorage) leave() error { return joinCgroup(s.prev) }

// measure reads path cold through the throttle and gives bytes/s.
func (s *sdStorage) measure(path string) (float64, error) {
	dropCache(path)
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer func() { _ = s.leave() }()
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	t := time.Now()
	n, err := io.Copy(io.Discard, f)
	if err != nil {
		return 0, err
	}
	return float64(n) / time.Since(t).Seconds(), nil
}

// Close leaves the cgroup and undoes the card: unmount, detach, remove.
func (s *sdStorage) Close() error {
	var errs []error
	if s.prev != "" {
		errs = append(errs, s.leave())
	}
	if s.cgroup != "" {
		if err := os.Remove(s.cgroup); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	if s.dir != "" || s.loop != "" {
		if err := exec.Command("umount", s.mnt).Run(); err != nil && s.dir != "" {
			errs = append(errs, fmt.Errorf("umount %s: %w", s.mnt, err))
		}
	}
	if s.loop != "" {
		if err := exec.Command("losetup", "-d", s.loop).Run(); err != nil {
			errs = append(errs, fmt.Errorf("losetup -d %s: %w", s.loop, err))
		}
	}
	_ = os.Remove(s.image)
	return errors.Join(errs...)
}

func joinCgroup(dir string) error {
	err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	if err != nil {
		return fmt.Errorf("join cgroup %s: %w", dir, err)
	}
	return nil
}

// ownBlkioCgroup is this process's blkio cgroup folder (v1).
func ownBlkioCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) == 3 && strings.Contains(","+parts[1]+",", ",blkio,") {
			return filepath.Join(blkioRoot, parts[2]), nil
		}
	}
	return "", errors.New("no blkio line in /proc/self/cgroup")
}

func run(ctx context.Context, name string, args ...string) error {
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}

func folderSize(dir string) (int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range ents {
		fi, err := os.Stat(filepath.Join(dir, e.Name())) // follows links
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n, nil
}

// copyFolder copies dir's regular files (links followed) into dst.
func copyFolder(dir, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		src := filepath.Join(dir, e.Name())
		fi, err := os.Stat(src)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if err := copyFile(src, filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

// onSDCard runs the startup and first-start sections again with the models
// on an emulated SD card. A card that cannot be made here is no error: the
// rows say why they are missing (never a made-up figure).
func onSDCard(ctx context.Context, o Options, work string) (Startup, FirstStart, SDInfo) {
	info := SDInfo{Rate: o.SDRate}
	if o.SDRate < 0 {
		info.NotMeasured = "turned off (--sd-rate < 0)"
		return Startup{}, FirstStart{}, info
	}
	fail := func(err error) (Startup, FirstStart, SDInfo) {
		info.NotMeasured = err.Error()
		o.Log.Warn("bench: SD card rows not measured", "err", err)
		return Startup{}, FirstStart{}, info
	}
	card, err := newSDStorage(ctx, work, o.Models, o.SDRate)
	if err != nil {
		return fail(err)
	}
	defer func() {
		if err := card.Close(); err != nil {
			o.Log.Warn("bench: SD card cleanup", "err", err)
		}
	}()
	if info.Measured, err = card.measure(filepath.Join(card.dir, "mobilenet_v2_1.0_224_quant.tflite")); err != nil {
		return fail(err)
	}
	if err := card.enter(); err != nil {
		return fail(err)
	}
	defer func() { _ = card.leave() }()
	oc := o
	oc.Models = card.dir
	// A work folder of their own: the in-process sections left theirs.
	sdWork := filepath.Join(work, "on-sd")
	if err := os.MkdirAll(sdWork, 0o755); err != nil {
		return fail(err)
	}
	st, err := startup(ctx, oc, sdWork)
	if err != nil {
		return fail(fmt.Errorf("startup on the card: %w", err))
	}
	fs, err := firstStart(ctx, oc, sdWork)
	if err != nil {
		return fail(fmt.Errorf("first start on the card: %w", err))
	}
	return st, fs, info
}
