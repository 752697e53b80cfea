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
