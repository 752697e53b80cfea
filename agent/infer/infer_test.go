package infer_test

import (
	"encoding/binary"
	"errors"
	"image"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/agent/infer/infertest"
	"github.com/edge-agent/edge-agent/tflite"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// The expected results of ../shared/models/MANIFEST.md, on the real runtime.
func TestManifestTop1(t *testing.T) {
	cases := []struct {
		model, image, labels string
		index                int
		label                string
	}{
		{"mobilenet_v2_1.0_224_quant.tflite", "cat.bmp", "imagenet_labels.txt", 286, "Egyptian cat"},
		{"mobilenet_v2_1.0_224_quant.tflite", "bird.bmp", "imagenet_labels.txt", 20, "chickadee"},
		{"mobilenet_v2_1.0_224_quant.tflite", "grace_hopper.bmp", "imagenet_labels.txt", 653, "military uniform"},
		{"mobilenet_v2_1.0_224_quant.tflite", "sunflower.bmp", "imagenet_labels.txt", 986, "daisy"},
		{"mobilenet_v1_0.25_128_quant.tflite", "cat.bmp", "imagenet_labels.txt", 286, "Egyptian cat"},
		{"mobilenet_v1_0.25_128_quant.tflite", "bird.bmp", "imagenet_labels.txt", 20, "chickadee"},
		{"mobilenet_v2_1.0_224_inat_bird_quant.tflite", "bird.bmp", "inat_bird_labels.txt", 659, "Poecile atricapillus (Black-capped Chickadee)"},
		{"keras_lstm_mnist_ptq.tflite", "mnist_nine.bmp", "", 9, ""},
	}
	for _, c := range cases {
		t.Run(c.model+"/"+c.image, func(t *testing.T) {
			m, it, _, err := tflite.LoadStaged(tflitetest.Path(t, c.model), tflite.LoadOptions{Interpreter: tflite.Options{Threads: 2}})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			defer it.Close()
			in, err := infer.FromFile(tflitetest.Path(t, c.image), it.Inputs()[0], infer.DefaultNormalization, 0)
			if err != nil {
				t.Fatal(err)
			}
			var labels []string
			if c.labels != "" {
				if labels, err = infer.ReadLabels(tflitetest.Path(t, c.labels)); err != nil {
					t.Fatal(err)
				}
			}
			top, err := infer.Classify(it, in.Bytes, 3, labels)
			if err != nil {
				t.Fatal(err)
			}
			if top[0].Index != c.index || top[0].Label != c.label {
				t.Fatalf("top-1 = %d %q (%.3f), want %d %q; top-3 %+v", top[0].Index, top[0].Label, top[0].Score, c.index, c.label, top)
			}
		})
	}
}

func TestXOR(t *testing.T) {
	m, it, _, err := tflite.LoadStaged(tflitetest.Path(t, "xor_model.tflite"), tflite.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	defer it.Close()
	for _, c := range []struct {
		a, b float32
		high bool
	}{{0, 0, false}, {0, 1, true}, {1, 0, true}, {1, 1, false}} {
		in := float32Bytes(c.a, c.b)
		top, err := infer.Classify(it, in, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := top[0].Score > 0.5; got != c.high {
			t.Errorf("xor(%v,%v) = %.3f, want high=%v", c.a, c.b, top[0].Score, c.high)
		}
	}
}

func TestBadInputs(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rgb := tflite.TensorInfo{Name: "input", Type: "uint8", Shape: []int{1, 224, 224, 3}, Bytes: 224 * 224 * 3}
	vec := tflite.TensorInfo{Name: "x", Type: "float32", Shape: []int{1, 2}, Bytes: 8}
	cases := []struct {
		name string
		path string
		t    tflite.TensorInfo
		want error
	}{
		{"text named png", write("fake.png", []byte("not an image at all")), rgb, infer.ErrImageDecode},
		{"corrupt bmp", write("bad.bmp", []byte("BM\x00\x01garbage")), rgb, infer.ErrImageDecode},
		{"gif", write("x.gif", []byte("GIF89a\x01\x00\x01\x00")), rgb, infer.ErrUnsupportedInput},
		{"image for vector model", tflitetest.Path(t, "cat.bmp"), vec, infer.ErrNotImageModel},
		{"raw wrong size", write("in.raw", make([]byte, 7)), vec, tflite.ErrInputSize},
		{"missing", filepath.Join(dir, "nope.raw"), vec, infer.ErrInputRead},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := infer.FromFile(c.path, c.t, infer.DefaultNormalization, 0)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
	// The right size is accepted as raw.
	if in, err := infer.FromFile(write("ok.raw", make([]byte, 8)), vec, infer.DefaultNormalization, 0); err != nil || in.Kind != "raw" {
		t.Fatalf("raw input: %v %+v", err, in)
	}
}

func TestGrayImageIsRawPixels(t *testing.T) {
	// mnist_nine.bmp is 28x28 8-bit gray: the LSTM's input must be its bytes.
	img := image.NewGray(image.Rect(0, 0, 3, 2))
	copy(img.Pix, []byte{0, 1, 127, 128, 254, 255})
	got, err := infer.FromImage(img, tflite.TensorInfo{Type: "uint8", Shape: []int{1, 2, 3}, Bytes: 6}, infer.DefaultNormalization)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(img.Pix) {
		t.Fatalf("gray pixels = %v, want %v", got, img.Pix)
	}
}

func float32Bytes(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		putF32(b[4*i:], f)
	}
	return b
}

// Decompression bombs in every supported format are refused from their
// header, before the decoder allocates the image they declare.
func TestImageBombsRefusedBeforeDecoding(t *testing.T) {
	before := vmHWM(t)
	cases := []struct {
		name string
		b    []byte
	}{
		{"png 20000x20000 (389 KB)", infertest.PNG(20000, 20000)},
		{"png 16-bit 3000x3000 (72 MB decoded)", infertest.PNG16(3000, 3000)},
		{"bmp 30000x30000 in 1 MiB", infertest.BMP(30000, 30000, 1<<20)},
		{"jpeg 65000x65000 in 1 MiB", infertest.JPEG(65000, 65000, 1<<20)},
	}
	for _, c := range cases {
		_, err := infer.DecodeImage(c.b, 0)
		if !errors.Is(err, infer.ErrInputTooLarge) {
			t.Errorf("%s (%d bytes): %v, want input_too_large", c.name, len(c.b), err)
		}
		// The same through a file, as the CLI reads it.
		p := filepath.Join(t.TempDir(), "bomb.img")
		os.WriteFile(p, c.b, 0o644)
		vec := tflite.TensorInfo{Type: "uint8", Shape: []int{1, 224, 224, 3}, Bytes: 224 * 224 * 3}
		if _, err := infer.FromFile(p, vec, infer.DefaultNormalization, 0); !errors.Is(err, infer.ErrInputTooLarge) {
			t.Errorf("%s from a file: %v", c.name, err)
		}
	}
	// A real image under the limit still decodes; a lower limit refuses it.
	cat, err := os.ReadFile(tflitetest.Path(t, "cat.bmp"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := infer.DecodeImage(cat, 0); err != nil {
		t.Fatalf("cat.bmp: %v", err)
	}
	if _, err := infer.DecodeImage(cat, 1000); !errors.Is(err, infer.ErrInputTooLarge) {
		t.Fatalf("cat.bmp over a 1000-pixel limit: %v", err)
	}
	grew := vmHWM(t) - before
	t.Logf("peak RSS grew %d KiB across the bombs", grew>>10)
	if grew > 64<<20 {
		t.Fatalf("peak RSS grew %d MiB", grew>>20)
	}
}

// vmHWM is the process's peak resident set size, in bytes.
func vmHWM(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// FuzzDecodeImage: whatever bytes a client sends as an image decode to an
// image within the pixel limit or fail with a coded error, and a decoded
// image prepares into a model input of the right size.
func FuzzDecodeImage(f *testing.F) {
	for _, b := range [][]byte{infertest.PNG(8, 8), infertest.PNG16(4, 4), infertest.BMP(4, 4, 200), infertest.JPEG(16, 16, 0),
		infertest.PNG(2000, 2000)} {
		f.Add(b)
	}
	if dir := os.Getenv("EDGE_AGENT_MODELS"); dir != "" {
		if b, err := os.ReadFile(filepath.Join(dir, "mnist_nine.bmp")); err == nil {
			f.Add(b)
		}
	}
	const maxPixels = 1 << 20
	rgb := tflite.TensorInfo{Type: "uint8", Shape: []int{1, 32, 32, 3}, Bytes: 32 * 32 * 3}
	gray := tflite.TensorInfo{Type: "float32", Shape: []int{1, 28, 28}, Bytes: 28 * 28 * 4}
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := infer.DecodeImage(data, maxPixels)
		if err != nil {
			if tflite.Code(err) == "internal" {
				t.Fatalf("uncoded error: %v", err)
			}
			return
		}
		if b := img.Bounds(); b.Dx()*b.Dy() > maxPixels || b.Dx() <= 0 || b.Dy() <= 0 {
			t.Fatalf("decoded %v past the limit", b)
		}
		for _, ti := range []tflite.TensorInfo{rgb, gray} {
			in, err := infer.FromImage(img, ti, infer.DefaultNormalization)
			if err != nil || len(in) != ti.Bytes {
				t.Fatalf("%v: %d bytes, %v", ti.Shape, len(in), err)
			}
		}
	})
}

// Only a single score vector is a classifier's output.
func TestIsScoreVector(t *testing.T) {
	out := func(typ string, shape ...int) tflite.TensorInfo { return tflite.TensorInfo{Type: typ, Shape: shape} }
	for _, c := range []struct {
		outs []tflite.TensorInfo
		want bool
	}{
		{[]tflite.TensorInfo{out("uint8", 1, 1001)}, true},
		{[]tflite.TensorInfo{out("float32", 10)}, true},
		{[]tflite.TensorInfo{out("int64", 1, 513, 513)}, false},                                                                 // a segmentation map
		{[]tflite.TensorInfo{out("float32", 1, 1, 17, 3)}, false},                                                               // pose keypoints
		{[]tflite.TensorInfo{out("float32", 1, 10, 4), out("float32", 1, 10), out("float32", 1, 10), out("float32", 1)}, false}, // SSD post-processing
		{[]tflite.TensorInfo{out("float32", 1, 1)}, true},                                                                       // one score (XOR's sigmoid)
	} {
		if got := infer.IsScoreVector(c.outs); got != c.want {
			t.Errorf("%v: %v, want %v", c.outs, got, c.want)
		}
	}
}

func floatOutput(name string, shape []int, v ...float32) infer.Output {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return infer.Output{Name: name, Type: "float32", Shape: shape, Data: b}
}

// The detector and pose heads are read by their documented layouts
// (synthetic tensors: no shared model has such a head).
func TestHeads(t *testing.T) {
	outs := []infer.Output{
		floatOutput("boxes", []int{1, 3, 4}, .1, .2, .3, .4, .5, .5, .9, .9, 0, 0, 0, 0),
		floatOutput("classes", []int{1, 3}, 16, 0, 0),
		floatOutput("scores", []int{1, 3}, .6, .9, 0),
		floatOutput("count", []int{1}, 2),
	}
	labels := make([]string, 20)
	labels[0], labels[16] = "person", "dog"
	dets, ok := infer.Detections(outs, labels)
	if !ok || len(dets) != 2 || dets[0].Label != "person" || dets[0].Score != .9 || dets[1].Class != 16 || dets[1].Box != [4]float32{.1, .2, .3, .4} {
		t.Fatalf("detections %+v ok=%v", dets, ok)
	}
	if _, ok := infer.Detections(outs[:3], nil); ok {
		t.Fatal("three outputs read as a detector")
	}
	kps, ok := infer.Keypoints([]infer.Output{floatOutput("kp", []int{1, 1, 2, 3}, .5, .25, .9, .1, .2, .3)})
	if !ok || len(kps) != 2 || kps[0] != (infer.Keypoint{Y: .5, X: .25, Score: .9}) {
		t.Fatalf("keypoints %+v ok=%v", kps, ok)
	}
	if _, ok := infer.Keypoints([]infer.Output{{Type: "int64", Shape: []int{1, 513, 513}}}); ok {
		t.Fatal("a segmentation map read as keypoints")
	}
}
