// Package infer turns what a user hands the agent (an image, a raw tensor
// file) into input tensor bytes, and output tensors into ranked answers.
//
// Image rule (stable, documented in the README): decode to RGB (or gray for
// [1,H,W] and [1,H,W,1] inputs), resize to the input's H×W, then write per
// the input type: uint8 as-is; int8 as
// v−128; float32 as (v−Mean)/Std, by default (v−127.5)/127.5 in [−1, 1].
// The resize is x/image/draw's bilinear filter, which widens its support
// when shrinking (as PIL's BILINEAR does), and stretches to H×W; this is the
// preprocessing the shared models' expected results were checked with.
package infer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // registers the JPEG decoder
	_ "image/png"  // registers the PNG decoder
	"math"
	"os"
	"sort"
	"strings"

	"github.com/edge-agent/edge-agent/errcode"
	"github.com/edge-agent/edge-agent/tflite"
	_ "golang.org/x/image/bmp" // registers the BMP decoder
	"golang.org/x/image/draw"
)

// The kinds of bad input. Raw input of the wrong size is tflite.ErrInputSize.
var (
	// ErrUnsupportedInput: an image format other than BMP, PNG or JPEG.
	ErrUnsupportedInput = errcode.New("input_unsupported", "unsupported input format")
	// ErrImageDecode: the file claims to be an image but does not decode.
	ErrImageDecode = errcode.New("input_image_decode", "input image does not decode")
	// ErrNotImageModel: an image was given to a model whose input is not an
	// image ([1,H,W,3], [1,H,W,1] or [1,H,W] of uint8, int8 or float32).
	ErrNotImageModel = errcode.New("input_not_image_model", "model input is not an image")
	// ErrInputRead: the input file cannot be read.
	ErrInputRead = errcode.New("input_unreadable", "input file is not readable")
	// ErrInputTooLarge: the image's header declares more pixels (or a
	// larger decoded size) than the limit. Checked before decoding, so a
	// small compressed file cannot make the agent allocate gigabytes.
	ErrInputTooLarge = errcode.New("input_too_large", "input image too large")
)

// DefaultMaxPixels bounds an image's width × height when no limit is
// given: 16 MP is far above any model input (deeplab takes 0.26 MP) and
// still decodes in 64 MiB as RGBA.
const DefaultMaxPixels = 16_000_000

// InputError is a bad input with the file and the reason.
type InputError struct {
	Path   string
	Kind   *tflite.Kind
	Detail string
	Err    error
}

func (e *InputError) Error() string {
	s := "input: " + e.Kind.Error()
	if e.Path != "" {
		s = fmt.Sprintf("input %q: %s", e.Path, e.Kind.Error())
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

func (e *InputError) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

// Normalization maps pixel values v in [0,255] to float inputs (v−Mean)/Std.
type Normalization struct {
	Mean, Std float32
}

// DefaultNormalization maps pixels to [−1, 1].
var DefaultNormalization = Normalization{Mean: 127.5, Std: 127.5}

// Input is a prepared input tensor.
type Input struct {
	Kind  string // "image" or "raw"
	Bytes []byte
}

var imageExts = map[string]bool{".bmp": true, ".png": true, ".jpg": true, ".jpeg": true}

// sniff names the image format from the file's first bytes, "" for none.
func sniff(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("BM")):
		return "bmp"
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")):
		return "png"
	case bytes.HasPrefix(b, []byte("\xff\xd8\xff")):
		return "jpeg"
	case bytes.HasPrefix(b, []byte("GIF8")):
		return "gif"
	case len(b) >= 12 && bytes.Equal(b[:4], []byte("RIFF")) && bytes.Equal(b[8:12], []byte("WEBP")):
		return "webp"
	case bytes.HasPrefix(b, []byte("II*\x00")), bytes.HasPrefix(b, []byte("MM\x00*")):
		return "tiff"
	}
	return ""
}

// IsImage reports whether b starts like an image this package decodes.
func IsImage(b []byte) bool {
	f := sniff(b)
	return f == "bmp" || f == "png" || f == "jpeg"
}

// DecodeImage decodes BMP, PNG or JPEG bytes whose header declares at most
// maxPixels pixels (0 means DefaultMaxPixels).
func DecodeImage(b []byte, maxPixels int) (image.Image, error) {
	if f := sniff(b); f != "bmp" && f != "png" && f != "jpeg" {
		if f == "" {
			f = "unknown"
		}
		return nil, &InputError{Path: "(request)", Kind: ErrUnsupportedInput, Detail: f + " content (use BMP, PNG or JPEG)"}
	}
	return decodeBounded(b, "(request)", maxPixels)
}

// decodeBounded reads the image header first and decodes only when the
// declared size fits: every decoder allocates the whole image from the
// header before it reads a pixel, so the check must come first.
func decodeBounded(b []byte, path string, maxPixels int) (image.Image, error) {
	if maxPixels <= 0 {
		maxPixels = DefaultMaxPixels
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return nil, &InputError{Path: path, Kind: ErrImageDecode, Detail: err.Error(), Err: err}
	}
	if err := checkSize(cfg, maxPixels); err != nil {
		return nil, &InputError{Path: path, Kind: ErrInputTooLarge, Detail: err.Error()}
	}
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		return nil, &InputError{Path: path, Kind: ErrImageDecode, Detail: err.Error(), Err: err}
	}
	return img, nil
}

// checkSize bounds both the pixel count and the decoded bytes: a 16-bit
// PNG takes 8 bytes a pixel, so it gets half the pixels of an 8-bit one.
func checkSize(cfg image.Config, maxPixels int) error {
	w, h := int64(cfg.Width), int64(cfg.Height)
	if w <= 0 || h <= 0 {
		return fmt.Errorf("declares %d×%d pixels", w, h)
	}
	px := w * h
	if px > int64(maxPixels) {
		return fmt.Errorf("%d×%d is %d pixels, limit %d", w, h, px, maxPixels)
	}
	if need, limit := px*bytesPerPixel(cfg.ColorModel), int64(maxPixels)*4; need > limit {
		return fmt.Errorf("%d×%d decodes to %d bytes, limit %d", w, h, need, limit)
	}
	return nil
}

// bytesPerPixel is what the decoder allocates per pixel for a color model.
func bytesPerPixel(m color.Model) int64 {
	switch m {
	case color.RGBA64Model, color.NRGBA64Model:
		return 8
	case color.Gray16Model:
		return 2
	case color.GrayModel, color.AlphaModel:
		return 1
	case color.YCbCrModel:
		return 3 // 4:4:4 at most
	}
	if _, ok := m.(color.Palette); ok {
		return 1
	}
	return 4
}

// FromFile prepares input tensor t from the file at path: an image when its
// extension or content says so (at most maxPixels, 0 meaning
// DefaultMaxPixels), otherwise raw bytes that must match t's size.
func FromFile(path string, t tflite.TensorInfo, n Normalization, maxPixels int) (Input, error) {
	r, err := ReadRequest(path, maxPixels)
	if err != nil {
		return Input{}, err
	}
	r.Norm = n
	b, err := r.Prepare(t)
	if err != nil {
		return Input{}, err
	}
	return Input{Kind: r.Kind(), Bytes: b}, nil
}

func kindOf(err error) *tflite.Kind {
	if k, ok := err.(*tflite.Kind); ok {
		return k
	}
	return ErrImageDecode
}

// ImageLayout returns the height, width and channels of an image input.
func ImageLayout(t tflite.TensorInfo) (h, w, c int, ok bool) {
	switch t.Type {
	case "uint8", "int8", "float32":
	default:
		return 0, 0, 0, false
	}
	s := t.Shape
	switch {
	case len(s) == 4 && s[0] == 1 && (s[3] == 3 || s[3] == 1):
		return s[1], s[2], s[3], true
	case len(s) == 3 && s[0] == 1:
		return s[1], s[2], 1, true
	}
	return 0, 0, 0, false
}

// FromImage writes img into the layout and type of t.
func FromImage(img image.Image, t tflite.TensorInfo, n Normalization) ([]byte, error) {
	h, w, c, ok := ImageLayout(t)
	if !ok {
		return nil, ErrNotImageModel
	}
	px := scaled(img, w, h, c)
	switch t.Type {
	case "uint8":
		return px, nil
	case "int8":
		for i, v := range px {
			px[i] = byte(int8(int(v) - 128))
		}
		return px, nil
	default: // float32
		if n.Std == 0 {
			n = DefaultNormalization
		}
		out := make([]byte, 4*len(px))
		for i, v := range px {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits((float32(v)-n.Mean)/n.Std))
		}
		return out, nil
	}
}

// scaled resizes img to w×h with the bilinear filter and flattens it to
// row-major RGB (c=3) or gray (c=1) bytes.
//
// The bilinear scaler takes 32 bytes × w × the source's height beside the
// image: a tall, narrow image (1×16M pixels for a 513-wide input: 262 GB)
// would need far more than its own size. Beyond resizeScratch the source's
// rows are first averaged k at a time (a box filter), which the scaler's
// wide support would have blended anyway; images of ordinary shape are
// scaled as before.
func scaled(img image.Image, w, h, c int) []byte {
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	src := img
	sb := img.Bounds()
	sw, sh := int64(sb.Dx()), int64(sb.Dy())
	limit := resizeScratch(imageBytes(img)) - 4*int64(w*h) - 5*int64(w*h*c) - 1<<20 // and the scaler's weights
	if need := 32 * int64(w) * sh; need > limit {
		limit = max(limit, 1<<20)
		k := max((4*sw+32*int64(w))*sh/limit+1, 2)
		src = shrinkRows(img, int(k))
	}
	draw.BiLinear.Scale(dst, dst.Bounds(), src, src.Bounds(), draw.Src, nil)
	out := make([]byte, 0, w*h*c)
	for i := 0; i < len(dst.Pix); i += 4 {
		r, g, b := uint32(dst.Pix[i]), uint32(dst.Pix[i+1]), uint32(dst.Pix[i+2])
		if c == 1 {
			// ITU-R 601 luma, as image/color's GrayModel; exact for gray input.
			out = append(out, byte((19595*r+38470*g+7471*b+1<<15)>>16))
			continue
		}
		out = append(out, byte(r), byte(g), byte(b))
	}
	return out
}

// imageBytes is what img's pixels take.
func imageBytes(img image.Image) int64 {
	switch m := img.(type) {
	case *image.YCbCr:
		return int64(len(m.Y) + len(m.Cb) + len(m.Cr))
	case *image.Gray:
		return int64(len(m.Pix))
	case *image.Paletted:
		return int64(len(m.Pix))
	case *image.Gray16:
		return int64(len(m.Pix))
	case *image.RGBA64:
		return int64(len(m.Pix))
	case *image.NRGBA64:
		return int64(len(m.Pix))
	}
	b := img.Bounds()
	return 4 * int64(b.Dx()) * int64(b.Dy())
}

// shrinkRows averages every k rows of img into one row of an RGBA image.
func shrinkRows(img image.Image, k int) *image.RGBA {
	b := img.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, b.Dx(), (b.Dy()+k-1)/k))
	sum := make([]uint64, 4*b.Dx())
	for oy := 0; oy < out.Rect.Dy(); oy++ {
		clear(sum)
		y0, y1 := b.Min.Y+oy*k, min(b.Min.Y+(oy+1)*k, b.Max.Y)
		for y := y0; y < y1; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				r, g, bl, a := rgba64At(img, x, y)
				i := 4 * (x - b.Min.X)
				sum[i] += uint64(r)
				sum[i+1] += uint64(g)
				sum[i+2] += uint64(bl)
				sum[i+3] += uint64(a)
			}
		}
		n := uint64(y1-y0) * 257
		row := out.Pix[oy*out.Stride:]
		for i, v := range sum {
			row[i] = uint8(v / n)
		}
	}
	return out
}

// rgba64At reads a pixel without boxing its color (At allocates one per
// pixel for most image types).
func rgba64At(img image.Image, x, y int) (r, g, b, a uint32) {
	if m, ok := img.(image.RGBA64Image); ok {
		c := m.RGBA64At(x, y)
		return uint32(c.R), uint32(c.G), uint32(c.B), uint32(c.A)
	}
	return img.At(x, y).RGBA()
}

// Class is one ranked answer.
type Class struct {
	Index int     `json:"index"`
	Label string  `json:"label,omitempty"`
	Score float32 `json:"score"`
}

// TopK ranks scores, highest first, ties by lower index.
func TopK(scores []float32, k int, labels []string) []Class {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
	k = min(max(k, 1), len(idx))
	out := make([]Class, 0, k)
	for _, i := range idx[:k] {
		c := Class{Index: i, Score: scores[i]}
		if i < len(labels) {
			c.Label = labels[i]
		}
		out = append(out, c)
	}
	return out
}

// ReadLabels reads one label per line; line i labels class i.
func ReadLabels(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read labels: %w", err)
	}
	defer f.Close()
	var labels []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		labels = append(labels, strings.TrimSpace(sc.Text()))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read labels %q: %w", path, err)
	}
	return labels, nil
}

// Classify runs it on a raw input tensor and ranks output 0's classes.
func Classify(it *tflite.Interpreter, input []byte, k int, labels []string) ([]Class, error) {
	res, err := Run(Interpreter{It: it}, Request{Tensor: input, Top: k, Labels: labels})
	return res.Top, err
}
