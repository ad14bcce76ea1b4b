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
// It also reproduces, with Go's standard library, how WAL-G v3.0.8 reads and
// writes tar partitions (archive/tar) and its JSON documents (encoding/json
// v1, WAL-G's default DTO serializer); see the second half of this file. (One
// file on purpose: scripts/ensure-tools rebuilds when go.mod, go.sum or
// main.go change.)
//
// Usage:
//
//	walg-codecs compress   lz4|lzma|zstd   < plain      > compressed
//	walg-codecs decompress lz4|lzma|zst    < compressed > plain
//	walg-codecs tar-list                   < tar        > listing
//	walg-codecs tar-write                  < entry list > tar
//	walg-codecs sentinel-check             < sentinel JSON       > decoded JSON
//	walg-codecs metadata-check             < metadata.json       > decoded JSON
//	walg-codecs files-metadata-check       < files_metadata.json > summary JSON
//
// Exit status 0 on success, 1 on any error (message on stderr), 2 on usage
// errors.
package main

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz/lzma"
)

// copyBufferSize is WAL-G's utility.CopiedBlockMaxSize (20 MiB).
const copyBufferSize = 20 << 20

func usage() {
	fmt.Fprintln(os.Stderr, "usage: walg-codecs compress lz4|lzma|zstd  (stdin -> stdout)")
	fmt.Fprintln(os.Stderr, "       walg-codecs decompress lz4|lzma|zst (stdin -> stdout)")
	fmt.Fprintln(os.Stderr, "       walg-codecs tar-list | tar-write | sentinel-check | metadata-check | files-metadata-check (stdin -> stdout)")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	var err error
	switch os.Args[1] {
	case "compress", "decompress":
		if len(os.Args) != 3 {
			usage()
		}
		if os.Args[1] == "compress" {
			err = compress(os.Args[2], os.Stdin, out)
		} else {
			err = decompress(os.Args[2], os.Stdin, out)
		}
	case "tar-list", "tar-write", "sentinel-check", "metadata-check", "files-metadata-check":
		if len(os.Args) != 2 {
			usage()
		}
		err = formatCommands[os.Args[1]](in, out)
	default:
		usage()
	}
	if err == nil {
		err = out.Flush()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "walg-codecs %s: %v\n", strings.Join(os.Args[1:], " "), err)
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

// ------------------------------------------------------------------ formats
//
// Tar partitions and JSON documents as WAL-G v3.0.8 reads and writes them,
// with the same standard-library packages WAL-G uses: archive/tar for tars
// and encoding/json (v1, WAL-G's default "json_default" DTO serializer) for
// the sentinel, metadata.json and files_metadata.json. The struct layouts
// below follow walg-compat §2.2–2.4 (member names, JSON types, omitempty).

var formatCommands = map[string]func(*bufio.Reader, io.Writer) error{
	"tar-list":             tarList,
	"tar-write":            tarWrite,
	"sentinel-check":       sentinelCheck,
	"metadata-check":       metadataCheck,
	"files-metadata-check": filesMetadataCheck,
}

// tarList reads a tar from src the way WAL-G's extractOne does: archive/tar's
// Reader, Next until io.EOF, every entry's data read in full. Then, like
// WAL-G (walg-compat §3.2), the rest of the stream is read to EOF and any
// non-zero byte after the end-of-archive marker is an error. One line per
// entry, tab-separated:
//
//	<type flag>  <mode, octal>  <size>  <sha256 of the data, hex>  <name>  [<link name>]
//
// The link-name field is present only for entries that have one. Names with
// a tab or newline are refused (they would break the line format).
func tarList(src *bufio.Reader, dst io.Writer) error {
	tr := tar.NewReader(src)
	for i := 1; ; i++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("tar entry %d: %w", i, err)
		}
		if strings.ContainsAny(hdr.Name, "\t\n") || strings.ContainsAny(hdr.Linkname, "\t\n") {
			return fmt.Errorf("tar entry %d: name %q / link %q contains a tab or newline", i, hdr.Name, hdr.Linkname)
		}
		sum := sha256.New()
		n, err := io.Copy(sum, tr)
		if err != nil {
			return fmt.Errorf("tar entry %d (%s): reading its data: %w", i, hdr.Name, err)
		}
		if (hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA) && n != hdr.Size {
			return fmt.Errorf("tar entry %d (%s): read %d data bytes, header says %d", i, hdr.Name, n, hdr.Size)
		}
		line := fmt.Sprintf("%c\t%o\t%d\t%x\t%s", hdr.Typeflag, hdr.Mode, hdr.Size, sum.Sum(nil), hdr.Name)
		if hdr.Linkname != "" {
			line += "\t" + hdr.Linkname
		}
		if _, err := fmt.Fprintln(dst, line); err != nil {
			return err
		}
	}
	buf := make([]byte, 64<<10)
	var offset int64
	for {
		n, err := src.Read(buf)
		for j, b := range buf[:n] {
			if b != 0 {
				return fmt.Errorf("non-zero byte 0x%02x %d bytes after the end-of-archive marker", b, offset+int64(j))
			}
		}
		offset += int64(n)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading after the end-of-archive marker: %w", err)
		}
	}
}

// tarWrite writes a tar to dst the way WAL-G's tar ball writer does:
// archive/tar's Writer with the format left unspecified (USTAR when it fits,
// PAX otherwise; mtimes rounded to the second), one header per entry made by
// tar.FileInfoHeader from the source's stat and then given the entry name (as
// WAL-G's packer does), the data copied, and Close (two zero blocks, no
// record padding) at the end.
//
// Input: one entry per line, four tab-separated fields:
//
//	<name>  <type flag: 0 file, 5 directory, 2 symlink>  <mode, octal, or ->  <source>
//
// source: for 0 the file whose contents (and times/owner) to use; for 5 a
// directory to take times/owner from, or - for none; for 2 the link target.
// mode - keeps the source's permission bits (0700 for a directory without
// source, 0777 for a symlink).
func tarWrite(src *bufio.Reader, dst io.Writer) error {
	tw := tar.NewWriter(dst)
	sc := bufio.NewScanner(src)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if strings.TrimSpace(text) == "" {
			continue
		}
		if err := writeEntry(tw, text); err != nil {
			return fmt.Errorf("line %d (%q): %w", line, text, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading the entry list: %w", err)
	}
	return tw.Close()
}

func writeEntry(tw *tar.Writer, text string) error {
	f := strings.Split(text, "\t")
	if len(f) != 4 {
		return fmt.Errorf("want 4 tab-separated fields (name, type, mode, source), got %d", len(f))
	}
	name, typ, modeText, source := f[0], f[1], f[2], f[3]
	var hdr *tar.Header
	var data *os.File
	switch typ {
	case "0":
		file, err := os.Open(source)
		if err != nil {
			return err
		}
		defer file.Close()
		fi, err := file.Stat()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", source)
		}
		if hdr, err = tar.FileInfoHeader(fi, ""); err != nil {
			return err
		}
		data = file
	case "5":
		if source == "-" {
			hdr = &tar.Header{Typeflag: tar.TypeDir, Mode: 0o700, ModTime: time.Now()}
		} else {
			fi, err := os.Lstat(source)
			if err != nil {
				return err
			}
			if !fi.IsDir() {
				return fmt.Errorf("%s is not a directory", source)
			}
			if hdr, err = tar.FileInfoHeader(fi, ""); err != nil {
				return err
			}
		}
	case "2":
		hdr = &tar.Header{Typeflag: tar.TypeSymlink, Linkname: source, Mode: 0o777, ModTime: time.Now()}
	default:
		return fmt.Errorf("unsupported type flag %q (want 0, 5 or 2)", typ)
	}
	hdr.Name = name
	if modeText != "-" {
		mode, err := strconv.ParseInt(modeText, 8, 64)
		if err != nil {
			return fmt.Errorf("bad mode %q: %w", modeText, err)
		}
		hdr.Mode = mode
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if data != nil {
		n, err := io.Copy(tw, data)
		if err != nil {
			return err
		}
		if n != hdr.Size {
			return fmt.Errorf("%s changed size while being written (%d bytes, header %d)", source, n, hdr.Size)
		}
	}
	return nil
}

// tablespaceSpec is WAL-G's TablespaceSpec (walg-compat §2.5), decoded with
// the same rules as its UnmarshalJSON: base_prefix must be a string,
// tablespaces an optional array of strings, and every listed name needs a
// {"loc": string, "link": string} member. (WAL-G panics on a wrong member
// type where this returns an error.)
type tablespaceSpec struct {
	BasePrefix string
	Names      []string
	Locations  map[string]tablespaceLocation
}

type tablespaceLocation struct {
	Location string `json:"loc"`
	Symlink  string `json:"link"`
}

func (spec *tablespaceSpec) UnmarshalJSON(b []byte) error {
	var raw map[string]interface{}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	base, ok := raw["base_prefix"].(string)
	if !ok {
		return errors.New("Spec: base_prefix is missing or not a string")
	}
	spec.BasePrefix = base
	spec.Names = []string{}
	if items, ok := raw["tablespaces"].([]interface{}); ok {
		for _, item := range items {
			name, ok := item.(string)
			if !ok {
				return fmt.Errorf("Spec: tablespaces holds a non-string %v", item)
			}
			spec.Names = append(spec.Names, name)
		}
	}
	spec.Locations = map[string]tablespaceLocation{}
	for _, name := range spec.Names {
		entry, ok := raw[name].(map[string]interface{})
		if !ok {
			return fmt.Errorf("Spec: bad json structure, no entry for symlink %s", name)
		}
		loc, okLoc := entry["loc"].(string)
		link, okLink := entry["link"].(string)
		if !okLoc || !okLink {
			return fmt.Errorf("Spec: entry %s needs string loc and link, got %v", name, entry)
		}
		spec.Locations[name] = tablespaceLocation{loc, link}
	}
	return nil
}

func (spec *tablespaceSpec) MarshalJSON() ([]byte, error) {
	out := map[string]interface{}{"base_prefix": spec.BasePrefix, "tablespaces": spec.Names}
	for name, loc := range spec.Locations {
		out[name] = loc
	}
	return json.Marshal(out)
}

// sentinelDto is WAL-G v3.0.8's version-2 backup sentinel (BackupSentinelDto
// followed by the extended-metadata copy), walg-compat §2.2. LSNs are
// WAL-G's `LSN` type (uint64); pointers where WAL-G uses them.
type sentinelDto struct {
	LSN                   *uint64         `json:"LSN"`
	DeltaLSN              *uint64         `json:"DeltaLSN,omitempty"`
	DeltaFrom             *string         `json:"DeltaFrom,omitempty"`
	DeltaFullName         *string         `json:"DeltaFullName,omitempty"`
	DeltaCount            *int            `json:"DeltaCount,omitempty"`
	PgVersion             int             `json:"PgVersion"`
	FinishLSN             *uint64         `json:"FinishLSN"`
	SystemIdentifier      *uint64         `json:"SystemIdentifier,omitempty"`
	UncompressedSize      int64           `json:"UncompressedSize"`
	CompressedSize        int64           `json:"CompressedSize"`
	DataCatalogSize       int64           `json:"DataCatalogSize,omitempty"`
	Spec                  *tablespaceSpec `json:"Spec,omitempty"`
	UserData              interface{}     `json:"UserData,omitempty"`
	FilesMetadataDisabled bool            `json:"FilesMetadataDisabled,omitempty"`
	ChkpNum               *uint32         `json:"ChkpNum"`
	DeltaChkpNum          *uint32         `json:"DeltaChkpNum,omitempty"`
	Version               int             `json:"Version"`
	StartTime             time.Time       `json:"StartTime"`
	FinishTime            time.Time       `json:"FinishTime"`
	DateFmt               string          `json:"DateFmt"`
	Hostname              string          `json:"Hostname"`
	DataDir               string          `json:"DataDir"`
	IsPermanent           bool            `json:"IsPermanent"`
}

// extendedMetadataDto is WAL-G v3.0.8's metadata.json, walg-compat §2.3.
type extendedMetadataDto struct {
	StartTime        time.Time   `json:"start_time"`
	FinishTime       time.Time   `json:"finish_time"`
	DateFmt          string      `json:"date_fmt"`
	Hostname         string      `json:"hostname"`
	DataDir          string      `json:"data_dir"`
	PgVersion        int         `json:"pg_version"`
	StartLsn         uint64      `json:"start_lsn"`
	FinishLsn        uint64      `json:"finish_lsn"`
	IsPermanent      bool        `json:"is_permanent"`
	SystemIdentifier *uint64     `json:"system_identifier"`
	UncompressedSize int64       `json:"uncompressed_size"`
	CompressedSize   int64       `json:"compressed_size"`
	UserData         interface{} `json:"user_data,omitempty"`
}

// files_metadata.json, walg-compat §2.4.
type corruptBlocksInfo struct {
	CorruptBlocksCount int
	SomeCorruptBlocks  []uint32
}

type backupFileDescription struct {
	IsIncremented bool
	IsSkipped     bool
	MTime         time.Time
	CorruptBlocks *corruptBlocksInfo `json:",omitempty"`
	UpdatesCount  uint64
}

type tableInfo struct {
	Oid         uint32               `json:"oid"`
	Relfilenode uint32               `json:"relfilenode"`
	SubTables   map[string]tableInfo `json:"subtables,omitempty"`
}

type databaseObjectsInfo struct {
	Oid    uint32               `json:"oid"`
	Tables map[string]tableInfo `json:"tables_new,omitempty"`
}

type filesMetadataDto struct {
	Files            map[string]backupFileDescription `json:"Files,omitempty"`
	TarFileSets      map[string][]string              `json:"TarFileSets,omitempty"`
	DatabasesByNames map[string]databaseObjectsInfo   `json:"DatabasesByNames,omitempty"`
}

// decodeStrict decodes the whole of src into v with encoding/json v1 (member
// names matched case-insensitively, unknown members ignored, as in WAL-G) and
// refuses trailing data after the document.
func decodeStrict(src io.Reader, v interface{}) error {
	dec := json.NewDecoder(src)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decoding: %w", err)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		return fmt.Errorf("data after the JSON document (%v)", err)
	}
	return nil
}

// sentinelCheck decodes a sentinel into sentinelDto and prints it back with
// json.Marshal (what WAL-G understood, in WAL-G's shape). Like WAL-G's
// IsIncremental it refuses DeltaFrom without DeltaLSN, DeltaFullName and
// DeltaCount (WAL-G panics on those).
func sentinelCheck(src *bufio.Reader, dst io.Writer) error {
	var s sentinelDto
	if err := decodeStrict(src, &s); err != nil {
		return err
	}
	if s.DeltaFrom != nil && (s.DeltaLSN == nil || s.DeltaFullName == nil || s.DeltaCount == nil) {
		return errors.New("inconsistent sentinel: DeltaFrom without DeltaLSN, DeltaFullName or DeltaCount")
	}
	return printJSON(dst, s)
}

// metadataCheck decodes metadata.json into extendedMetadataDto and prints it
// back with json.Marshal.
func metadataCheck(src *bufio.Reader, dst io.Writer) error {
	var m extendedMetadataDto
	if err := decodeStrict(src, &m); err != nil {
		return err
	}
	return printJSON(dst, m)
}

// filesMetadataCheck decodes files_metadata.json into filesMetadataDto (every
// MTime must parse as a Go time, or decoding fails) and prints a summary:
// counts, the sorted Files keys, TarFileSets as decoded, the MTime range.
func filesMetadataCheck(src *bufio.Reader, dst io.Writer) error {
	var f filesMetadataDto
	if err := decodeStrict(src, &f); err != nil {
		return err
	}
	names := make([]string, 0, len(f.Files))
	var incremented, skipped, corrupt int
	var minTime, maxTime time.Time
	for name, desc := range f.Files {
		names = append(names, name)
		if desc.IsIncremented && desc.IsSkipped {
			return fmt.Errorf("Files[%q] is both IsIncremented and IsSkipped", name)
		}
		if desc.IsIncremented {
			incremented++
		}
		if desc.IsSkipped {
			skipped++
		}
		if desc.CorruptBlocks != nil {
			corrupt++
		}
		if desc.MTime.IsZero() {
			return fmt.Errorf("Files[%q] has no MTime", name)
		}
		if minTime.IsZero() || desc.MTime.Before(minTime) {
			minTime = desc.MTime
		}
		if desc.MTime.After(maxTime) {
			maxTime = desc.MTime
		}
	}
	sort.Strings(names)
	summary := map[string]interface{}{
		"FilesCount":       len(f.Files),
		"IncrementedCount": incremented,
		"SkippedCount":     skipped,
		"CorruptCount":     corrupt,
		"Files":            names,
		"TarFileSets":      f.TarFileSets,
		"DatabasesCount":   len(f.DatabasesByNames),
		"MinMTime":         minTime,
		"MaxMTime":         maxTime,
	}
	return printJSON(dst, summary)
}

func printJSON(dst io.Writer, v interface{}) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding: %w", err)
	}
	_, err = dst.Write(append(b, '\n'))
	return err
}
