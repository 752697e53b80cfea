package infer_test

import (
	"bytes"
	"context"
	"image"
	"image/color/palette"
	"image/gif"
	"image/jpeg"
	"image/png"
	"runtime"
	"testing"

	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/agent/infer/infertest"
	"github.com/edge-agent/edge-agent/tflite"
)

// allocated is what f allocates on the heap (runtime.MemStats.TotalAlloc):
// at least the most it held at once, garbage included.
func allocated(f func()) int64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return int64(b.TotalAlloc - a.TotalAlloc)
}

func encoded(t *testing.T, enc func(*bytes.Buffer) error) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := enc(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// costFactor is how far above what a decode really allocates its
// estimate may be.
const costFactor = 1.5

// Every format and mode the agent decodes: the estimate from the header is
// never below what the decoder allocates (all of it, so at least its peak)
// and within costFactor of it.
func TestEstimateCostMatchesDecode(t *testing.T) {
	const w, h = 1200, 1000
	rgb := image.NewRGBA(image.Rect(0, 0, w, h))
	gray := image.NewGray(image.Rect(0, 0, w, h))
	pal := image.NewPaletted(image.Rect(0, 0, w, h), palette.Plan9)
	cases := []struct {
		name string
		data []byte
		mode string
	}{
		{"jpeg progressive 4:4:4", infertest.FlatJPEG(w, h, 1, 1, true), "progressive 4:4:4"},
		{"jpeg progressive 4:2:0", infertest.FlatJPEG(w, h, 2, 2, true), "progressive 4:2:0"},
		{"jpeg progressive 4:2:2", infertest.FlatJPEG(w, h, 2, 1, true), "progressive 4:2:2"},
		{"jpeg baseline 4:4:4", infertest.FlatJPEG(w, h, 1, 1, false), "baseline 4:4:4"},
		{"jpeg baseline 4:2:0 (Go's encoder)", encoded(t, func(b *bytes.Buffer) error { return jpeg.Encode(b, rgb, nil) }), "baseline 4:2:0"},
		{"jpeg baseline gray", encoded(t, func(b *bytes.Buffer) error { return jpeg.Encode(b, gray, nil) }), "baseline gray"},
		{"png 8-bit gray", infertest.PNGOf(w, h, 8, 0, false), "8-bit type 0"},
		{"png 8-bit gray interlaced", infertest.PNGOf(w, h, 8, 0, true), "8-bit type 0 interlaced"},
		{"png 8-bit RGB", infertest.PNGOf(w, h, 8, 2, false), "8-bit type 2"},
		{"png 8-bit RGBA interlaced", infertest.PNGOf(w, h, 8, 6, true), "8-bit type 6 interlaced"},
		{"png 16-bit gray", infertest.PNGOf(w, h, 16, 0, false), "16-bit type 0"},
		{"png 16-bit RGBA", infertest.PNGOf(w, h, 16, 6, false), "16-bit type 6"},
		{"png 16-bit RGB interlaced", infertest.PNGOf(w, h, 16, 2, true), "16-bit type 2 interlaced"},
		{"png paletted", infertest.PNGOf(w, h, 8, 3, false), "8-bit type 3"},
		{"png gray with tRNS (Go's encoder: NRGBA)", encoded(t, func(b *bytes.Buffer) error {
			return png.Encode(b, &image.NRGBA{Pix: make([]byte, 4*w*h), Stride: 4 * w, Rect: gray.Rect})
		}), "8-bit type 6"},
		{"bmp 24-bit", infertest.BMP(w, h, 54+3*w*h), "4 bytes/pixel"},
		{"gif", encoded(t, func(b *bytes.Buffer) error { return gif.Encode(b, pal, nil) }), "paletted"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			est, err := infer.EstimateCost(c.data)
			if err != nil {
				t.Fatal(err)
			}
			if est.Mode != c.mode || est.Width != w || est.Height != h {
				t.Errorf("read %s %d×%d from the header, want %s %d×%d", est.Mode, est.Width, est.Height, c.mode, w, h)
			}
			var img image.Image
			got := allocated(func() { img, _, err = image.Decode(bytes.NewReader(c.data)) })
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%v: measured %.2f MiB, estimate/measured %.2f", est, float64(got)/(1<<20), float64(est.Decode)/float64(got))
			if est.Decode < got || float64(est.Decode) > costFactor*float64(got) {
				t.Errorf("estimated %d bytes for the decode, it allocated %d (want within ×%.1f above)", est.Decode, got, costFactor)
			}
			if held := infer.ImageBytes(img); est.Image < held {
				t.Errorf("estimated %d bytes for the image, it holds %d", est.Image, held)
			}
		})
	}
}

// The resize into a model's input stays within the estimate's resize
// scratch, also for a tall, narrow image whose bilinear scaler alone
// would take 32 bytes × the input's width × its height (717 MB here
// before the rows were pre-shrunk).
func TestResizeWithinEstimate(t *testing.T) {
	for _, c := range []struct {
		name string
		data []byte
		in   []int
	}{
		{"camera-like 4:2:0 to 224", infertest.FlatJPEG(4000, 3000, 2, 2, false), []int{1, 224, 224, 3}},
		{"camera-like 4:2:0 to 513", infertest.FlatJPEG(4000, 3000, 2, 2, false), []int{1, 513, 513, 3}},
		{"tall gray to 224", infertest.PNGOf(2, 100_000, 8, 0, false), []int{1, 224, 224, 3}},
		{"tall 16-bit to 513 float", infertest.PNGOf(3, 60_000, 16, 6, false), []int{1, 513, 513, 3}},
	} {
		t.Run(c.name, func(t *testing.T) {
			est, err := infer.EstimateCost(c.data)
			if err != nil {
				t.Fatal(err)
			}
			img, err := infer.DecodeImage(c.data, 0)
			if err != nil {
				t.Fatal(err)
			}
			typ := "uint8"
			if c.name[len(c.name)-5:] == "float" {
				typ = "float32"
			}
			ti := tflite.TensorInfo{Type: typ, Shape: c.in}
			got := allocated(func() { _, err = infer.FromImage(img, ti, infer.DefaultNormalization) })
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%v: resize allocated %.2f MiB", est, float64(got)/(1<<20))
			if got > est.Resize {
				t.Errorf("resize allocated %d bytes, the estimate allows %d", got, est.Resize)
			}
		})
	}
}

// A shrunk tall image still resizes to the same picture: a vertical
// gradient stays a gradient.
func TestShrinkRowsKeepsPicture(t *testing.T) {
	const w, h = 2, 200_000
	img := image.NewGray(image.Rect(0, 0, w, h))
	for y := range h {
		img.Pix[y*w], img.Pix[y*w+1] = uint8(y*256/h), uint8(y*256/h)
	}
	b, err := infer.FromImage(img, tflite.TensorInfo{Type: "uint8", Shape: []int{1, 16, 16, 1}}, infer.DefaultNormalization)
	if err != nil {
		t.Fatal(err)
	}
	for y := range 16 {
		want := float64(y*16 + 8)
		if d := float64(b[y*16]) - want; d > 2 || d < -2 {
			t.Errorf("row %d: %d, want about %.0f", y, b[y*16], want)
		}
	}
}

// FuzzDecodeBudget: whatever bytes a client sends, the budgeted decode
// either refuses them with a coded error or decodes an image its estimate
// covers, and gives the budget back.
func FuzzDecodeBudget(f *testing.F) {
	for _, b := range [][]byte{infertest.FlatJPEG(40, 24, 1, 1, true), infertest.FlatJPEG(33, 17, 2, 2, false),
		infertest.FlatJPEG(17, 9, 2, 1, true), infertest.PNGOf(9, 7, 16, 2, true), infertest.PNGOf(5, 5, 1, 0, false),
		infertest.PNGOf(300, 2, 8, 3, true), infertest.BMP(4, 4, 200), infertest.JPEG(16, 16, 0)} {
		f.Add(b)
	}
	b := infer.NewDecodeBudget(64 << 20)
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := b.Decode(context.Background(), data, 1<<20)
		if err != nil {
			if tflite.Code(err) == "internal" {
				t.Fatalf("uncoded error: %v", err)
			}
		} else {
			if held := infer.ImageBytes(d.Image); held > d.Cost.Image {
				t.Fatalf("%v: the image holds %d bytes", d.Cost, held)
			}
			d.Release()
		}
		if s := b.Stats(); s.InUseBytes != 0 {
			t.Fatalf("%d bytes still held", s.InUseBytes)
		}
	})
}
