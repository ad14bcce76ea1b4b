// walg-codecs: a compression oracle that writes and reads objects the way
// WAL-G v3.0.8 does, for wal-rus's interop tests.
//
// The real WAL-G cannot always be built here (the Go module proxy may refuse
// github.com/wal-g/wal-g), but the compression libraries WAL-G v3.0.8 pins can
// be, and the codec layer of WAL-G is a thin shell around them. This program
// reproduces that shell with the same library calls and options:
//
//	lz4   writer: pierrec/lz4/v4 lz4.NewWriter(w) with no options (4 MiB
//	              blocks, content checksum, block independence, level fast)
//	      reader: lz4.NewReader(r) (stops after the first frame)
//	lzma  writer: ulikunitz/xz/lzma lzma.NewWriter(w) (defaults: classic
//	              .lzma header, 8 MiB dictionary, unknown size + EOS marker)
//	      reader: lzma.NewReader(r)
//	zstd  writer: klauspost/compress/zstd zstd.NewWriter(w,
//	              zstd.WithEncoderLevel(zstd.SpeedDefault)), streamed
//	      reader: zstd.NewReader(r), read through its IOReadCloser
//
// As in WAL-G, the input is fed to the compressor with plain Write calls from
// a 20 MiB copy buffer (WAL-G's utility.FastCopy: Read, then Write of whatever
// was read, including a final zero-length Write at EOF), then the compressor
// is closed; readers are given a source that keeps answering io.EOF once it
// has seen it (WAL-G's computils.UntilEOFReader).
//
// Usage:
//
//	walg-codecs compress   lz4|lzma|zstd   < plain      > compressed
//	walg-codecs decompress lz4|lzma|zst    < compressed > plain
//
// Exit status 0 on success, 1 on any error (message on stderr), 2 on usage
// errors.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz/lzma"
)

// copyBufferSize is WAL-G's utility.CopiedBlockMaxSize (20 MiB).
const copyBufferSize = 20 << 20

func usage() {
	fmt.Fprintln(os.Stderr, "usage: walg-codecs compress lz4|lzma|zstd  (stdin -> stdout)")
	fmt.Fprintln(os.Stderr, "       walg-codecs decompress lz4|lzma|zst (stdin -> stdout)")
	os.Exit(2)
}

func main() {
	if len(os.Args) != 3 {
		usage()
	}
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	var err error
	switch os.Args[1] {
	case "compress":
		err = compress(os.Args[2], os.Stdin, out)
	case "decompress":
		err = decompress(os.Args[2], os.Stdin, out)
	default:
		usage()
	}
	if err == nil {
		err = out.Flush()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "walg-codecs %s %s: %v\n", os.Args[1], os.Args[2], err)
		os.Exit(1)
	}
}

// newCompressor returns the writer WAL-G v3.0.8 uses for compression method
// `method` (the WALG_COMPRESSION_METHOD value).
func newCompressor(method string, dst io.Writer) (io.WriteCloser, error) {
	switch method {
	case "lz4":
		return lz4.NewWriter(dst), nil
	case "lzma":
		return lzma.NewWriter(dst)
	case "zstd":
		return zstd.NewWriter(dst, zstd.WithEncoderLevel(zstd.SpeedDefault))
	default:
		return nil, fmt.Errorf("unknown compression method %q (want lz4, lzma or zstd)", method)
	}
}

// skipEmptyWrites drops zero-length writes before they reach the output, as
// WAL-G's EmptyWriteIgnorer does between the compressor and the upload pipe.
type skipEmptyWrites struct{ w io.Writer }

func (s skipEmptyWrites) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return s.w.Write(p)
}

func compress(method string, src io.Reader, dst io.Writer) error {
	cw, err := newCompressor(method, skipEmptyWrites{dst})
	if err != nil {
		return err
	}
	// Same feeding pattern as WAL-G's FastCopy: no io.Copy (which would take
	// the compressors' ReadFrom fast paths instead of Write).
	buf := make([]byte, copyBufferSize)
	for {
		n, rerr := src.Read(buf)
		if rerr != nil && rerr != io.EOF {
			return fmt.Errorf("reading input: %w", rerr)
		}
		if _, werr := cw.Write(buf[:n]); werr != nil {
			return fmt.Errorf("compressing: %w", werr)
		}
		if rerr == io.EOF {
			break
		}
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("closing compressor: %w", err)
	}
	return nil
}

// stickyEOF reports io.EOF forever once the underlying reader has reported it.
type stickyEOF struct {
	r   io.Reader
	eof bool
}

func (s *stickyEOF) Read(p []byte) (int, error) {
	if s.eof {
		return 0, io.EOF
	}
	n, err := s.r.Read(p)
	if errors.Is(err, io.EOF) {
		s.eof = true
	}
	return n, err
}

// newDecompressor returns the reader WAL-G v3.0.8 uses for objects whose name
// ends in `.ext`.
func newDecompressor(ext string, src io.Reader) (io.ReadCloser, error) {
	src = &stickyEOF{r: src}
	switch ext {
	case "lz4":
		return io.NopCloser(lz4.NewReader(src)), nil
	case "lzma":
		r, err := lzma.NewReader(src)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(r), nil
	case "zst":
		d, err := zstd.NewReader(src)
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	default:
		return nil, fmt.Errorf("unknown extension %q (want lz4, lzma or zst)", ext)
	}
}

func decompress(ext string, src io.Reader, dst io.Writer) error {
	r, err := newDecompressor(ext, src)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, r); err != nil {
		_ = r.Close()
		return fmt.Errorf("decompressing: %w", err)
	}
	return r.Close()
}
