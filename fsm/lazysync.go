package fsm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Lazy sync: the state file is written without fsync.
//
// Every committed entry is already fsync'd in the Raft log of a quorum, so
// the state machine's own fsync (two per bbolt commit) buys nothing a replay
// of the log cannot give back, as long as a damaged state file is never
// trusted. bbolt's shadow paging keeps the file consistent when only the
// process dies (the kernel still holds every write); only a machine crash can
// leave it torn. So a marker beside the file records the boot that last wrote
// it: opened again in the same boot, the file is whole and at most some
// entries behind (Raft replays them); opened after a reboot that did not
// follow a clean Close, it is discarded and the caller rebuilds it from the
// newest snapshot and the log.

const bootIDPath = "/proc/sys/kernel/random/boot_id"

var errNoBootID = errors.New("boot ID unavailable")

// currentBoot returns this machine's boot ID.
var currentBoot = func() (string, error) {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errNoBootID, err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", errNoBootID
	}
	return id, nil
}

// marker is what the file beside the state file says.
type marker struct {
	boot  string
	clean bool // written by Close after a final fsync
}

func markerPath(path string) string { return path + ".boot" }

func readMarker(path string) (marker, bool, error) {
	b, err := os.ReadFile(markerPath(path))
	if errors.Is(err, fs.ErrNotExist) {
		return marker{}, false, nil
	}
	if err != nil {
		return marker{}, false, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 || (f[1] != "clean" && f[1] != "dirty") {
		// A torn marker is as good as a dirty one from an unknown boot.
		return marker{}, true, nil
	}
	return marker{boot: f[0], clean: f[1] == "clean"}, true, nil
}

// writeMarker replaces the marker durably (write, fsync, rename, fsync dir).
func writeMarker(path string, m marker) error {
	state := "dirty"
	if m.clean {
		state = "clean"
	}
	tmp := markerPath(path) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte(m.boot + " " + state + "\n"))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, markerPath(path))
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// prepareLazy decides, before the file is opened, whether the state file can
// be trusted, removes it when it cannot, and marks it dirty for this boot. It
// reports whether the file was discarded.
func prepareLazy(path, boot string) (discarded bool, err error) {
	m, found, err := readMarker(path)
	if err != nil {
		return false, fmt.Errorf("fsm: read %s: %w", markerPath(path), err)
	}
	_, statErr := os.Stat(path)
	exists := statErr == nil
	// No marker beside an existing file: it was written with fsync on every
	// commit (before lazy sync), so it is whole.
	if exists && found && !m.clean && m.boot != boot {
		if err := os.Remove(path); err != nil {
			return false, fmt.Errorf("fsm: discard %s after a machine crash: %w", path, err)
		}
		discarded = true
	}
	if err := writeMarker(path, marker{boot: boot}); err != nil {
		return discarded, fmt.Errorf("fsm: write %s: %w", markerPath(path), err)
	}
	return discarded, nil
}
