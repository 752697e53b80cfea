// Package infertest builds hostile images for tests: files whose headers
// declare far more pixels than their bytes hold (decompression bombs).
package infertest

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/jpeg"
)

// PNG is a valid 8-bit gray PNG of w×h zero pixels. Its IDAT is streamed
// through zlib row by row, so building even a 20000×20000 one (389 KB)
// never holds the image in memory.
func PNG(w, h int) []byte {
	out := pngHeader(w, h, 8, 0) // 8-bit gray
	var idat bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&idat, zlib.BestCompression)
	row := make([]byte, w+1) // filter byte 0, then w zero pixels
	for range h {
		_, _ = zw.Write(row)
	}
	_ = zw.Close()
	chunk(out, "IDAT", idat.Bytes())
	chunk(out, "IEND", nil)
	return out.Bytes()
}

// PNG16 is a PNG header for a w×h 16-bit RGBA image (8 bytes a pixel once
// decoded) with a token IDAT: enough for the header check.
func PNG16(w, h int) []byte {
	out := pngHeader(w, h, 16, 6) // 16-bit RGBA
	chunk(out, "IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})
	chunk(out, "IEND", nil)
	return out.Bytes()
}

// pngHeader is the signature and IHDR of a w×h PNG.
func pngHeader(w, h int, depth, colorType byte) *bytes.Buffer {
	out := &bytes.Buffer{}
	out.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8], ihdr[9] = depth, colorType
	chunk(out, "IHDR", ihdr)
	return out
}

func chunk(out *bytes.Buffer, typ string, data []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(data)))
	out.Write(n[:])
	out.WriteString(typ)
	out.Write(data)
	c := crc32.NewIEEE()
	c.Write([]byte(typ))
	c.Write(data)
	binary.BigEndian.PutUint32(n[:], c.Sum32())
	out.Write(n[:])
}

// BMP is a 24-bit BMP whose header declares w×h pixels, padded with zero
// pixel bytes to size bytes in all.
func BMP(w, h, size int) []byte {
	const hdr = 14 + 40
	b := make([]byte, max(size, hdr))
	b[0], b[1] = 'B', 'M'
	binary.LittleEndian.PutUint32(b[2:], uint32(len(b)))
	binary.LittleEndian.PutUint32(b[10:], hdr)
	binary.LittleEndian.PutUint32(b[14:], 40)
	binary.LittleEndian.PutUint32(b[18:], uint32(w))
	binary.LittleEndian.PutUint32(b[22:], uint32(h))
	binary.LittleEndian.PutUint16(b[26:], 1)  // planes
	binary.LittleEndian.PutUint16(b[28:], 24) // bits per pixel
	return b
}

// JPEG is a small real JPEG whose frame header (SOF0) is patched to declare
// w×h pixels (at most 65535 each), padded with scan bytes to size.
func JPEG(w, h, size int) []byte {
	var buf bytes.Buffer
	_ = jpeg.Encode(&buf, image.NewGray(image.Rect(0, 0, 16, 16)), nil)
	b := buf.Bytes()
	for i := 0; i+8 < len(b); i++ {
		if b[i] == 0xff && b[i+1] == 0xc0 {
			binary.BigEndian.PutUint16(b[i+5:], uint16(h))
			binary.BigEndian.PutUint16(b[i+7:], uint16(w))
			break
		}
	}
	if pad := size - len(b); pad > 0 {
		// Before the end-of-image marker: more entropy-coded data.
		end := b[len(b)-2:]
		b = append(append(b[:len(b)-2:len(b)-2], make([]byte, pad)...), end...)
	}
	return b
}

// PNGOf is a valid w×h PNG of zero pixels with the given bit depth, color
// type (0 gray, 2 RGB, 3 paletted, 4 gray+alpha, 6 RGBA) and Adam7
// interlacing, its IDAT streamed row by row: cheap to build at any size,
// as expensive to decode as any picture of that size and type.
func PNGOf(w, h int, depth, colorType byte, interlaced bool) []byte {
	out := pngHeader(w, h, depth, colorType)
	if interlaced {
		b := out.Bytes()
		b[8+8+12] = 1 // IHDR's interlace byte
		c := crc32.NewIEEE()
		c.Write(b[12 : 12+4+13])
		binary.BigEndian.PutUint32(b[8+8+13:], c.Sum32())
	}
	if colorType == 3 {
		chunk(out, "PLTE", make([]byte, 3))
	}
	channels := map[byte]int{0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colorType]
	rowBytes := func(pw int) int { return (pw*int(depth)*channels + 7) / 8 }
	var idat bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&idat, zlib.BestCompression)
	writeRows := func(pw, ph int) {
		if pw == 0 || ph == 0 {
			return
		}
		row := make([]byte, 1+rowBytes(pw))
		for range ph {
			_, _ = zw.Write(row)
		}
	}
	if !interlaced {
		writeRows(w, h)
	} else {
		for _, p := range [7][4]int{{8, 0, 8, 0}, {8, 4, 8, 0}, {4, 0, 8, 4}, {4, 2, 4, 0}, {2, 0, 4, 2}, {2, 1, 2, 0}, {1, 0, 2, 1}} {
			xf, xo, yf, yo := p[0], p[1], p[2], p[3]
			writeRows((w-xo+xf-1)/xf, (h-yo+yf-1)/yf)
		}
	}
	_ = zw.Close()
	chunk(out, "IDAT", idat.Bytes())
	chunk(out, "IEND", nil)
	return out.Bytes()
}

// FlatJPEG is a valid three-component JPEG of one flat color, w×h pixels
// (at most 65535 each), with luma sampling factors h0×v0 over 1×1 chroma
// (1×1: 4:4:4, 2×2: 4:2:0). Progressive, it is a DC scan and one AC scan
// per component made only of end-of-band runs: a few hundred bytes that
// make Go's decoder keep every coefficient block (what
// `cjpeg -progressive -sample 1x1` of a large picture costs it). Baseline,
// each block is its six bits.
func FlatJPEG(w, h, h0, v0 int, progressive bool) []byte {
	var out bytes.Buffer
	seg := func(marker byte, data []byte) {
		out.Write([]byte{0xff, marker, byte((len(data) + 2) >> 8), byte(len(data) + 2)})
		out.Write(data)
	}
	out.Write([]byte{0xff, 0xd8})
	seg(0xe0, []byte("JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"))
	q := make([]byte, 65)
	for i := 1; i < 65; i++ {
		q[i] = 1
	}
	seg(0xdb, q)
	sof := []byte{8, byte(h >> 8), byte(h), byte(w >> 8), byte(w), 3,
		1, byte(h0<<4 | v0), 0, 2, 0x11, 0, 3, 0x11, 0}
	if progressive {
		seg(0xc2, sof)
	} else {
		seg(0xc0, sof)
	}
	// DC table 0: symbols 0 and 1, two-bit codes (00 is "no difference").
	dc := append([]byte{0x00, 0, 2}, make([]byte, 14)...)
	dc = append(dc, 0, 1)
	seg(0xc4, dc)
	// AC table 0: the fifteen end-of-band runs 0x00, 0x10 … 0xe0, four-bit
	// codes (0000 is EOB, the end of one block).
	ac := append([]byte{0x10, 0, 0, 0, 15}, make([]byte, 12)...)
	for r := range 15 {
		ac = append(ac, byte(r<<4))
	}
	seg(0xc4, ac)
	mxx, myy := (w+8*h0-1)/(8*h0), (h+8*v0-1)/(8*v0)
	var bw bitWriter
	if !progressive {
		seg(0xda, []byte{3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 63, 0})
		for range mxx * myy * (h0*v0 + 2) {
			bw.put(0, 2) // DC: no difference
			bw.put(0, 4) // EOB
		}
		out.Write(bw.flush())
	} else {
		seg(0xda, []byte{3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 0, 0})
		for range mxx * myy * (h0*v0 + 2) {
			bw.put(0, 2)
		}
		out.Write(bw.flush())
		for c, f := range [][2]int{{h0, v0}, {1, 1}, {1, 1}} {
			cw, ch := (w*f[0]+h0-1)/h0, (h*f[1]+v0-1)/v0
			n := ((cw + 7) / 8) * ((ch + 7) / 8)
			seg(0xda, []byte{1, byte(c + 1), 0x00, 1, 63, 0})
			for n > 0 {
				run := min(n, 32767)
				r := 0
				for 1<<(r+1) <= run {
					r++
				}
				bw.put(uint32(r), 4)
				bw.put(uint32(run-1<<r), r)
				n -= run
			}
			out.Write(bw.flush())
		}
	}
	out.Write([]byte{0xff, 0xd9})
	return out.Bytes()
}

// bitWriter packs entropy-coded bits, stuffing a zero after each 0xff.
type bitWriter struct {
	out   []byte
	acc   uint32
	nbits int
}

func (b *bitWriter) put(v uint32, n int) {
	for i := n - 1; i >= 0; i-- {
		b.acc = b.acc<<1 | (v>>i)&1
		b.nbits++
		if b.nbits == 8 {
			b.emit(byte(b.acc))
			b.acc, b.nbits = 0, 0
		}
	}
}

func (b *bitWriter) emit(c byte) {
	b.out = append(b.out, c)
	if c == 0xff {
		b.out = append(b.out, 0)
	}
}

// flush pads the last byte with ones and returns the bytes written.
func (b *bitWriter) flush() []byte {
	if b.nbits > 0 {
		b.emit(byte(b.acc<<(8-b.nbits)) | byte(0xff>>b.nbits))
	}
	out := b.out
	*b = bitWriter{}
	return out
}
