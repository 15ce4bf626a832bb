package fsm

import (
	"os"
	"testing"
)

// withBoot makes the machine believe it runs in the given boot.
func withBoot(t *testing.T, boot string) {
	t.Helper()
	old := currentBoot
	currentBoot = func() (string, error) { return boot, nil }
	t.Cleanup(func() { currentBoot = old })
}

func lazyState(t *testing.T, f *fixture) {
	t.Helper()
	apply(t, f.m, activateLog(1, t0),
		callLog(2, &Call{Epoch: 1, Time: t0, Object: testID(1), Ops: []Op{put("k", "v")}}))
}

// crash drops the machine without the final fsync and clean marker that
// Close writes, as a SIGKILL or a power cut would.
func (f *fixture) crash() {
	f.t.Helper()
	f.m.mu.Lock()
	f.m.db.Close()
	f.m.db = nil
	f.m.mu.Unlock()
}

func TestLazySyncProcessCrashKeepsState(t *testing.T) {
	withBoot(t, "boot-a")
	f := newFixture(t, Options{LazySync: true})
	lazyState(t, f)
	want := hashOf(t, f.m)
	f.crash()
	f.open() // same boot: the kernel kept every write
	if f.m.Discarded() {
		t.Fatal("state discarded after a process crash in the same boot")
	}
	if got := hashOf(t, f.m); got != want {
		t.Fatalf("state changed: %+v vs %+v", got, want)
	}
}

func TestLazySyncMachineCrashDiscardsState(t *testing.T) {
	withBoot(t, "boot-a")
	f := newFixture(t, Options{LazySync: true})
	lazyState(t, f)
	f.crash()
	withBoot(t, "boot-b") // the machine rebooted without a clean Close
	f.open()
	if !f.m.Discarded() {
		t.Fatal("a state file possibly torn by a machine crash was trusted")
	}
	if f.m.Applied() != 0 || f.m.Version(testID(1)) != 0 {
		t.Fatalf("discarded state still has Applied %d", f.m.Applied())
	}
	// The log replays on top of the empty state, as Raft does on restart.
	apply(t, f.m, activateLog(1, t0),
		callLog(2, &Call{Epoch: 1, Time: t0, Object: testID(1), Ops: []Op{put("k", "v")}}))
	if v, ok, _ := f.m.Get(testID(1), []byte("k")); !ok || string(v) != "v" {
		t.Fatalf("replayed state: %q %v", v, ok)
	}
	// Reopened in the new boot, the rebuilt state is trusted.
	f.crash()
	f.open()
	if f.m.Discarded() || f.m.Applied() != 2 {
		t.Fatalf("rebuilt state: discarded %v applied %d", f.m.Discarded(), f.m.Applied())
	}
}

func TestLazySyncCleanCloseSurvivesReboot(t *testing.T) {
	withBoot(t, "boot-a")
	f := newFixture(t, Options{LazySync: true})
	lazyState(t, f)
	want := hashOf(t, f.m)
	if err := f.m.Close(); err != nil {
		t.Fatal(err)
	}
	withBoot(t, "boot-b")
	f.open()
	if f.m.Discarded() {
		t.Fatal("a cleanly closed state file was discarded after a reboot")
	}
	if got := hashOf(t, f.m); got != want {
		t.Fatal("state changed across a clean close and reboot")
	}
}

func TestLazySyncTrustsFilesFromBeforeIt(t *testing.T) {
	withBoot(t, "boot-a")
	f := newFixture(t, Options{}) // fsync on every commit, no marker
	lazyState(t, f)
	want := hashOf(t, f.m)
	f.crash()
	if _, err := os.Stat(markerPath(f.path)); err == nil {
		t.Fatal("a marker was written without lazy sync")
	}
	withBoot(t, "boot-b")
	f.opts.LazySync = true
	f.open()
	if f.m.Discarded() || hashOf(t, f.m) != want {
		t.Fatal("a file written with fsync on every commit was not trusted")
	}
}

func TestLazySyncTornMarkerDiscards(t *testing.T) {
	withBoot(t, "boot-a")
	f := newFixture(t, Options{LazySync: true})
	lazyState(t, f)
	f.crash()
	if err := os.WriteFile(markerPath(f.path), []byte("boot-a"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.open()
	if !f.m.Discarded() {
		t.Fatal("a torn marker was trusted")
	}
}
