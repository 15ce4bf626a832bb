package shard

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/duro-io/duro/fsm"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// walSegmentSize bounds each log segment file: the WAL preallocates a
// segment and rolls to the next one when it fills.
const walSegmentSize = 8 << 20

// openLog opens the shard's Raft log: hashicorp/raft-wal, an append-only
// segmented log that pays one fsync per append where raft-boltdb pays two
// and rewrites B-tree pages. The term and vote stay in raft-boltdb (the
// stable store). A shard whose log still lives in raft-boltdb, from before,
// has it moved into the WAL first.
func openLog(dir string, bolt *raftboltdb.BoltStore, log hclog.Logger) (*walLog, error) {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := migrateLog(dir, bolt, log); err != nil {
			return nil, fmt.Errorf("move raft log from raft-boltdb into the WAL: %w", err)
		}
	} else if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	w, err := openWAL(dir, log)
	if err != nil {
		return nil, fmt.Errorf("open raft log: %w", err)
	}
	// A move interrupted after the rename leaves the old copy behind.
	if last, err := bolt.LastIndex(); err == nil && last > 0 {
		first, _ := bolt.FirstIndex()
		if err := bolt.DeleteRange(first, last); err != nil {
			w.Close()
			return nil, fmt.Errorf("drop the moved raft-boltdb log: %w", err)
		}
	}
	return w, nil
}

// walLog is a raft-wal log that also closes its metadata store, which
// WAL.Close leaves open (holding its file lock, so the same process could
// not open the shard again).
type walLog struct {
	*raftwal.WAL
	meta *metadb.BoltMetaDB
}

func openWAL(dir string, log hclog.Logger) (*walLog, error) {
	meta := &metadb.BoltMetaDB{}
	w, err := raftwal.Open(dir, raftwal.WithSegmentSize(walSegmentSize), raftwal.WithLogger(log), raftwal.WithMetaStore(meta))
	if err != nil {
		meta.Close()
		return nil, err
	}
	return &walLog{WAL: w, meta: meta}, nil
}

func (w *walLog) Close() error {
	return errors.Join(w.WAL.Close(), w.meta.Close())
}

// migrateLog builds the WAL at dir from every entry of the raft-boltdb log,
// in a scratch directory renamed into place only once complete, so an
// interrupted move starts over and a half-built WAL is never used.
func migrateLog(dir string, from raft.LogStore, log hclog.Logger) error {
	last, err := from.LastIndex()
	if err != nil || last == 0 {
		return err
	}
	first, err := from.FirstIndex()
	if err != nil {
		return err
	}
	tmp := dir + ".moving"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return err
	}
	w, err := openWAL(tmp, log)
	if err != nil {
		return err
	}
	const batch = 512
	logs := make([]*raft.Log, 0, batch)
	for i := first; i <= last && err == nil; i++ {
		l := new(raft.Log)
		if err = from.GetLog(i, l); err != nil {
			err = fmt.Errorf("read entry %d: %w", i, err)
			break
		}
		logs = append(logs, l)
		if len(logs) == batch || i == last {
			err = w.StoreLogs(logs)
			logs = logs[:0]
		}
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dir)
	}
	if err == nil {
		err = fsm.SyncDir(filepath.Dir(dir))
	}
	return err
}

func (s *Shard) closeStores() error {
	var errs []error
	if s.wal != nil {
		errs = append(errs, s.wal.Close())
	}
	if s.store != nil {
		errs = append(errs, s.store.Close())
	}
	return errors.Join(errs...)
}
