package wal

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// ReadFrames reads the frames of one segment of the log in dir, as described
// by seg (from a ScanResult of the same dir), and calls visit for each in
// order with the frame's byte offset in the file. It is for tools such as
// verify that look inside payloads after Scan has checked the framing.
//
// It reads only the frames Scan found good (the first seg.DataBytes bytes of
// data), opens the file read-only, takes no lock and changes nothing. rec and
// its Payload are valid only during the call to visit. It stops at the first
// error visit returns and returns that error unchanged. A frame that no longer
// decodes (the file changed after Scan) is an error naming the file and offset.
// It blocks on file reads and is safe for concurrent use.
func ReadFrames(fsys vfs.FS, dir string, seg SegmentInfo, visit func(offset int64, rec *record.Record) error) error {
	path := filepath.Join(dir, seg.Name)
	f, err := fsys.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rd := record.NewReader(f, dataStart, dataStart+seg.DataBytes, 0)
	for {
		off := rd.Offset()
		rec, err := rd.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("wal: reading %s at offset %d: %w", path, off, err)
		}
		if err := visit(off, &rec); err != nil {
			return err
		}
	}
}

// ReadDurable opens (and so recovers) the log in dir, calls visit with every
// durable frame in seq order, closes the log and returns what recovery
// reported. The Record passed to visit is only valid during the call. It
// stops at the first error visit returns, and returns it.
func ReadDurable(dir string, opts Options, visit func(rec record.Record) error) (rec *Recovery, err error) {
	log, rec, err := Open(dir, opts)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := log.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("wal: close %s: %w", dir, cerr)
		}
	}()
	r := log.NewReader(0)
	defer r.Close()
	for {
		frame, err := r.Next()
		if err == io.EOF {
			return rec, nil
		}
		if err != nil {
			return rec, err
		}
		if err := visit(frame); err != nil {
			return rec, err
		}
	}
}
