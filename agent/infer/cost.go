package infer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
)

// What a decode costs. Pixels alone do not say it: Go's progressive JPEG
// decoder keeps every coefficient block of every component (4 bytes per
// coefficient, 64 per 8×8 block: 4 bytes a pixel per full-resolution
// component) besides the image; an interlaced PNG allocates each pass
// next to the whole image; a 16-bit PNG takes 8 bytes a pixel. Cost reads
// the header only and bounds, format by format, what the decoder and the
// resize into the model's input allocate, so the decode budget can be
// taken before a byte of pixel data is read.

// Cost is what decoding one image and resizing it for a model allocate.
type Cost struct {
	Format        string `json:"format"` // jpeg, png, bmp, gif
	Mode          string `json:"mode"`   // e.g. "progressive 4:4:4", "16-bit interlaced"
	Width, Height int
	// Image is the decoded image's bytes: what the request holds until it
	// is resized into the model's input.
	Image int64 `json:"image_bytes"`
	// Decode is all the decoder allocates, the image included: the peak
	// while decoding.
	Decode int64 `json:"decode_bytes"`
	// Resize is the scratch the resize into a model's input may take
	// beside the image (bounded by resizeScratch, see scaled).
	Resize int64 `json:"resize_bytes"`
}

// Peak is what the request may hold at once: the decode, or the image
// with the resize's scratch, whichever is more (the decoder's scratch is
// garbage by the time the resize starts).
func (c Cost) Peak() int64 { return max(c.Decode, c.Image+c.Resize) }

func (c Cost) String() string {
	return fmt.Sprintf("%s %s %d×%d: decode %s, image %s, resize %s", c.Format, c.Mode, c.Width, c.Height,
		mib(c.Decode), mib(c.Image), mib(c.Resize))
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// decodeSlack covers a decoder's fixed allocations (zlib's window and
// tables, Huffman tables, row buffers, palettes, the bufio reader).
const decodeSlack = 256 << 10

// minResizeScratch is the least the resize may take beside the image;
// small images resize within it without a pre-shrink.
const minResizeScratch = 16 << 20

// resizeScratch is what the resize of an image of imageBytes may take
// beside it: the bilinear scaler's buffer (32 bytes × the input's width
// × the source height), the scaled RGBA and the tensor. scaled pre-shrinks
// rows of an image whose scaler would need more (a tall, narrow image).
func resizeScratch(imageBytes int64) int64 { return max(minResizeScratch, 2*imageBytes) }

// EstimateCost reads b's header (BMP, PNG, JPEG or GIF) and bounds what
// decoding it allocates. It does not decode pixel data.
func EstimateCost(b []byte) (Cost, error) {
	var c Cost
	var err error
	switch f := sniff(b); f {
	case "jpeg":
		c, err = jpegCost(b)
	case "png":
		c, err = pngCost(b)
	case "bmp", "gif":
		c, err = configCost(b, f)
	default:
		if f == "" {
			f = "unknown"
		}
		return Cost{}, fmt.Errorf("%s content: no decode cost known", f)
	}
	if err != nil {
		return Cost{}, err
	}
	if c.Width <= 0 || c.Height <= 0 {
		return Cost{}, fmt.Errorf("declares %d×%d pixels", c.Width, c.Height)
	}
	c.Decode += decodeSlack
	c.Resize = resizeScratch(c.Image)
	return c, nil
}

// configCost covers BMP and GIF, whose decoders allocate one image of the
// header's color model (and a row or LZW buffer: the slack).
func configCost(b []byte, format string) (Cost, error) {
	cfg, _, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return Cost{}, err
	}
	bpp := bytesPerPixel(cfg.ColorModel)
	px := int64(cfg.Width) * int64(cfg.Height)
	mode := fmt.Sprintf("%d bytes/pixel", bpp)
	if _, ok := cfg.ColorModel.(color.Palette); ok {
		mode = "paletted"
	}
	return Cost{Format: format, Mode: mode, Width: cfg.Width, Height: cfg.Height, Image: bpp * px, Decode: bpp * px}, nil
}

// jpegCost follows image/jpeg: the image is allocated in whole MCUs
// (8·h0 × 8·v0 pixels of the first component), as Gray (one component)
// or YCbCr of the components' subsampling (three or four; the fourth,
// black, in its own plane). A progressive file also keeps one 256-byte
// block per 8×8 block of every component until the last scan. RGB and
// CMYK files are converted to a 4-byte-per-pixel image at the end, beside
// the planes.
func jpegCost(b []byte) (Cost, error) {
	sof, err := readSOF(b)
	if err != nil {
		return Cost{}, err
	}
	c := Cost{Format: "jpeg", Width: sof.width, Height: sof.height, Mode: "baseline"}
	if sof.progressive {
		c.Mode = "progressive"
	}
	n := len(sof.comps)
	if n == 1 {
		sof.comps[0].h, sof.comps[0].v = 1, 1 // as the decoder does
	}
	h0, v0 := sof.comps[0].h, sof.comps[0].v
	mxx := int64((sof.width + 8*h0 - 1) / (8 * h0))
	myy := int64((sof.height + 8*v0 - 1) / (8 * v0))
	if n == 1 {
		c.Mode += " gray"
		c.Image = 8 * mxx * 8 * myy
	} else {
		// The chroma planes are 8·h·mxx × 8·v·myy of the second component.
		h1, v1 := sof.comps[1].h, sof.comps[1].v
		c.Mode += subsampling(h0, v0, h1, v1)
		y := 8 * int64(h0) * mxx * 8 * int64(v0) * myy
		cplane := 8 * int64(h1) * mxx * 8 * int64(v1) * myy
		c.Image = y + 2*cplane
		if n == 4 {
			c.Mode += " 4 components"
			c.Image += 8 * int64(sof.comps[3].h) * mxx * 8 * int64(sof.comps[3].v) * myy
		}
	}
	c.Decode = c.Image
	if n == 4 || n == 3 && sof.isRGB() {
		// RGB or CMYK: a 4-byte copy beside the planes, which it replaces
		// as the decoded image.
		rgba := 4 * int64(sof.width) * int64(sof.height)
		c.Decode += rgba
		c.Image = rgba
	}
	if sof.progressive {
		for _, k := range sof.comps {
			c.Decode += mxx * myy * int64(k.h) * int64(k.v) * 64 * 4
		}
	}
	return c, nil
}

type jpegComp struct {
	id   byte
	h, v int
}

type jpegSOF struct {
	width, height int
	progressive   bool
	jfif          bool
	// adobe is the Adobe APP14 transform, -1 without one.
	adobe int
	comps []jpegComp
}

// isRGB is image/jpeg's rule for three components stored as RGB.
func (s jpegSOF) isRGB() bool {
	if s.jfif {
		return false
	}
	if s.adobe == 0 {
		return true
	}
	return s.comps[0].id == 'R' && s.comps[1].id == 'G' && s.comps[2].id == 'B'
}

// readSOF walks the markers to the frame header. It checks what the cost
// depends on (sampling factors 1..4) and leaves the rest to the decoder.
func readSOF(b []byte) (jpegSOF, error) {
	s := jpegSOF{adobe: -1}
	i := 2
	for i+4 <= len(b) {
		if b[i] != 0xff {
			return s, fmt.Errorf("jpeg: marker expected at byte %d", i)
		}
		m := b[i+1]
		if m == 0xff { // fill byte
			i++
			continue
		}
		if m == 0xd8 || m == 0x01 || (m >= 0xd0 && m <= 0xd7) {
			i += 2
			continue
		}
		n := int(binary.BigEndian.Uint16(b[i+2:]))
		if n < 2 || i+2+n > len(b) {
			return s, fmt.Errorf("jpeg: segment 0x%02x overruns the data", m)
		}
		seg := b[i+4 : i+2+n]
		switch {
		case m == 0xe0 && bytes.HasPrefix(seg, []byte("JFIF\x00")):
			s.jfif = true
		case m == 0xee && len(seg) >= 12 && bytes.HasPrefix(seg, []byte("Adobe")):
			s.adobe = int(seg[11])
		case m == 0xc0 || m == 0xc1 || m == 0xc2:
			if len(seg) < 6 {
				return s, fmt.Errorf("jpeg: short frame header")
			}
			s.progressive = m == 0xc2
			s.height = int(binary.BigEndian.Uint16(seg[1:]))
			s.width = int(binary.BigEndian.Uint16(seg[3:]))
			nc := int(seg[5])
			if nc != 1 && nc != 3 && nc != 4 || len(seg) < 6+3*nc {
				return s, fmt.Errorf("jpeg: %d components", nc)
			}
			for k := 0; k < nc; k++ {
				hv := seg[6+3*k+1]
				h, v := int(hv>>4), int(hv&0x0f)
				if h < 1 || h > 4 || v < 1 || v > 4 {
					return s, fmt.Errorf("jpeg: sampling factor %d×%d", h, v)
				}
				s.comps = append(s.comps, jpegComp{seg[6+3*k], h, v})
			}
			if nc > 1 && (s.comps[0].h%s.comps[1].h != 0 || s.comps[0].v%s.comps[1].v != 0) {
				return s, fmt.Errorf("jpeg: unsupported subsampling")
			}
			return s, nil
		case m == 0xda || m == 0xd9:
			return s, fmt.Errorf("jpeg: no frame header before the scan")
		case m >= 0xc3 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc:
			return s, fmt.Errorf("jpeg: unsupported frame type 0x%02x", m)
		}
		i += 2 + n
	}
	return s, fmt.Errorf("jpeg: no frame header")
}

// pngCost follows image/png: one image of the color type's model (8-bit
// gray or palette 1 byte a pixel, gray+alpha, RGB and RGBA 4 bytes, 16-bit
// gray 2, the other 16-bit types 8; with a tRNS chunk gray and RGB become
// NRGBA of 4 or 8 bytes), two row buffers, and for Adam7 interlacing each
// of the seven passes as its own image of the same model before it is
// merged: at most the image's size again.
func pngCost(b []byte) (Cost, error) {
	if len(b) < 33 || string(b[12:16]) != "IHDR" {
		return Cost{}, fmt.Errorf("png: no IHDR")
	}
	w := int64(binary.BigEndian.Uint32(b[16:]))
	h := int64(binary.BigEndian.Uint32(b[20:]))
	depth, ct, interlace := b[24], b[25], b[28]
	if w <= 0 || h <= 0 || w > 1<<31-1 || h > 1<<31-1 {
		return Cost{}, fmt.Errorf("png: declares %d×%d pixels", w, h)
	}
	trns := pngHasTRNS(b)
	var bpp int64
	switch ct {
	case 0: // gray
		bpp = 1
		if depth == 16 {
			bpp = 2
		}
		if trns {
			bpp = 4
			if depth == 16 {
				bpp = 8
			}
		}
	case 3: // paletted
		bpp = 1
	case 2, 4, 6: // RGB, gray+alpha, RGBA
		bpp = 4
		if depth == 16 {
			bpp = 8
		}
	default:
		return Cost{}, fmt.Errorf("png: color type %d", ct)
	}
	c := Cost{Format: "png", Width: int(w), Height: int(h), Mode: fmt.Sprintf("%d-bit type %d", depth, ct)}
	c.Image = bpp * w * h
	rowBytes := (w*int64(depth)*pngChannels(ct) + 7) / 8
	c.Decode = c.Image + 2*(rowBytes+1)
	if interlace == 1 {
		c.Mode += " interlaced"
		c.Decode += c.Image
	}
	return c, nil
}

func pngChannels(ct byte) int64 {
	switch ct {
	case 2:
		return 3
	case 4:
		return 2
	case 6:
		return 4
	}
	return 1
}

// pngHasTRNS reports a tRNS chunk before the first IDAT.
func pngHasTRNS(b []byte) bool {
	for i := 8; i+8 <= len(b); {
		n := int64(binary.BigEndian.Uint32(b[i:]))
		switch string(b[i+4 : i+8]) {
		case "tRNS":
			return true
		case "IDAT", "IEND":
			return false
		}
		next := int64(i) + 12 + n
		if next > int64(len(b)) {
			return false
		}
		i = int(next)
	}
	return false
}

// subsampling names the chroma subsampling as image.YCbCrSubsampleRatio
// does.
func subsampling(h0, v0, h1, v1 int) string {
	switch (h0/h1)<<4 | v0/v1 {
	case 0x11:
		return " 4:4:4"
	case 0x12:
		return " 4:4:0"
	case 0x21:
		return " 4:2:2"
	case 0x22:
		return " 4:2:0"
	case 0x41:
		return " 4:1:1"
	case 0x42:
		return " 4:1:0"
	}
	return fmt.Sprintf(" %dx%d/%dx%d", h0, v0, h1, v1)
}
