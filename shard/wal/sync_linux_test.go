package wal

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// Both ways of syncing, raw and the runtime's, report what the kernel says:
// a failed sync must fail the store's write, never pass for a success.
func TestDatasyncReportsTheKernelsAnswer(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "seg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("record")); err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe() // fdatasync on a pipe is EINVAL
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()

	saved := rawSyncs
	defer func() { rawSyncs = saved }()
	for _, mode := range []struct {
		name  string
		slots int
	}{{"raw", 1}, {"runtime", 0}} {
		t.Run(mode.name, func(t *testing.T) {
			rawSyncs = make(chan struct{}, mode.slots)
			for range 3 {
				if err := datasync(f); err != nil {
					t.Fatalf("sync of a file: %v", err)
				}
				if err := datasync(w); !errors.Is(err, syscall.EINVAL) {
					t.Fatalf("sync of a pipe: %v, want EINVAL", err)
				}
			}
			if n := len(rawSyncs); n != 0 {
				t.Fatalf("%d raw sync slots still held after the syncs returned", n)
			}
		})
	}
}

// More syncs at once than there are raw slots: the rest take the runtime's
// way, and every one succeeds.
func TestDatasyncConcurrent(t *testing.T) {
	saved := rawSyncs
	defer func() { rawSyncs = saved }()
	rawSyncs = make(chan struct{}, 1)
	dir := t.TempDir()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Create(filepath.Join(dir, string(rune('a'+i))))
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			for range 20 {
				if _, err := f.Write([]byte("x")); err != nil {
					errs <- err
					return
				}
				if err := datasync(f); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := len(rawSyncs); n != 0 {
		t.Fatalf("%d raw sync slots still held", n)
	}
}
