package builtin

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/duro-io/duro"
)

// lock is a lease-based mutex with fencing tokens.
//
// Acquire grants the lock to an owner for ttl_ms and returns a token that is
// strictly larger than every token the lock issued before, so a resource
// that remembers the largest token it has seen can refuse a stale holder.
// Acquiring again as the current holder extends the lease and keeps the
// token. The lease ends at Release, or when it expires: an alarm set for the
// expiry clears the holder. Until that alarm has run, an expired lease is
// already treated as free by Acquire, Renew and Release (by the call's time),
// so a late alarm never extends a lease.
type lock struct{}

var lockKey = []byte("lock")

// maxLeaseMs bounds ttl_ms (one year).
const maxLeaseMs = 365 * 24 * 3600 * 1000

type lockState struct {
	Owner     string `json:"owner"`      // "" when free
	Token     uint64 `json:"token"`      // the holder's token
	ExpiresMs int64  `json:"expires_ms"` // unix ms
	Last      uint64 `json:"last"`       // the largest token ever issued
}

// AcquireArg is the argument of Acquire.
type AcquireArg struct {
	Owner string `json:"owner"`
	TTLMs int64  `json:"ttl_ms"`
}

// AcquireResult is the result of Acquire: when OK is false, Owner is the
// current holder and Token is 0.
type AcquireResult struct {
	OK    bool   `json:"ok"`
	Token uint64 `json:"token"`
	Owner string `json:"owner"`
}

// RenewArg is the argument of Renew.
type RenewArg struct {
	Owner string `json:"owner"`
	Token uint64 `json:"token"`
	TTLMs int64  `json:"ttl_ms"`
}

// ReleaseArg is the argument of Release.
type ReleaseArg struct {
	Owner string `json:"owner"`
	Token uint64 `json:"token"`
}

// OKResult is the result of Renew and Release.
type OKResult struct {
	OK bool `json:"ok"`
}

// HolderResult is the result of Holder: the lease as stored (Owner "" when
// free). An expired lease shows until its alarm has cleared it.
type HolderResult struct {
	Owner     string `json:"owner"`
	Token     uint64 `json:"token"`
	ExpiresMs int64  `json:"expires_ms"`
}

func newLockClass() *duro.Class {
	c := duro.NewClass(LockNamespace, func() *lock { return &lock{} })
	duro.Method(c, "Acquire", (*lock).Acquire)
	duro.Method(c, "Renew", (*lock).Renew)
	duro.Method(c, "Release", (*lock).Release)
	duro.Method(c, "Holder", (*lock).Holder)
	return c
}

func loadLock(st duro.Storage) (lockState, error) {
	var s lockState
	v, ok, err := st.Get(lockKey)
	if err != nil || !ok {
		return s, err
	}
	if err := json.Unmarshal(v, &s); err != nil {
		return s, fmt.Errorf("lock: corrupt stored state %q: %v", v, err)
	}
	return s, nil
}

func saveLock(st duro.Storage, s lockState) error {
	b, _ := json.Marshal(s)
	if err := st.Put(lockKey, b); err != nil {
		return err
	}
	if s.Owner == "" {
		return st.DeleteAlarm()
	}
	return st.SetAlarm(time.UnixMilli(s.ExpiresMs))
}

// held reports whether s is held at now.
func (s lockState) held(now time.Time) bool { return s.Owner != "" && now.UnixMilli() < s.ExpiresMs }

func checkTTL(ttl int64) error {
	if ttl <= 0 || ttl > maxLeaseMs {
		return invalid("lock: ttl_ms must be between 1 and %d, got %d", int64(maxLeaseMs), ttl)
	}
	return nil
}

// Acquire takes the lock for owner for ttl_ms, if it is free (or expired, or
// already held by owner).
func (*lock) Acquire(ctx duro.Context, a AcquireArg) (AcquireResult, error) {
	if a.Owner == "" {
		return AcquireResult{}, invalid("lock: owner must not be empty")
	}
	if err := checkTTL(a.TTLMs); err != nil {
		return AcquireResult{}, err
	}
	st := ctx.Storage()
	s, err := loadLock(st)
	if err != nil {
		return AcquireResult{}, err
	}
	now := ctx.Now()
	if s.held(now) && s.Owner != a.Owner {
		return AcquireResult{OK: false, Owner: s.Owner}, nil
	}
	if !s.held(now) {
		s.Last++
		s.Owner, s.Token = a.Owner, s.Last
	}
	s.ExpiresMs = now.UnixMilli() + a.TTLMs
	return AcquireResult{OK: true, Token: s.Token, Owner: s.Owner}, saveLock(st, s)
}

// Renew extends the lease of owner holding token by ttl_ms from now.
func (*lock) Renew(ctx duro.Context, a RenewArg) (OKResult, error) {
	if err := checkTTL(a.TTLMs); err != nil {
		return OKResult{}, err
	}
	st := ctx.Storage()
	s, err := loadLock(st)
	if err != nil {
		return OKResult{}, err
	}
	now := ctx.Now()
	if !s.held(now) || s.Owner != a.Owner || s.Token != a.Token {
		return OKResult{OK: false}, nil
	}
	s.ExpiresMs = now.UnixMilli() + a.TTLMs
	return OKResult{OK: true}, saveLock(st, s)
}

// Release frees the lock if owner holds it with token.
func (*lock) Release(ctx duro.Context, a ReleaseArg) (OKResult, error) {
	st := ctx.Storage()
	s, err := loadLock(st)
	if err != nil {
		return OKResult{}, err
	}
	if !s.held(ctx.Now()) || s.Owner != a.Owner || s.Token != a.Token {
		return OKResult{OK: false}, nil
	}
	s.Owner, s.Token, s.ExpiresMs = "", 0, 0
	return OKResult{OK: true}, saveLock(st, s)
}

// Holder returns the lease as stored.
func (*lock) Holder(ctx duro.Context, _ json.RawMessage) (HolderResult, error) {
	s, err := loadLock(ctx.Storage())
	return HolderResult{Owner: s.Owner, Token: s.Token, ExpiresMs: s.ExpiresMs}, err
}

// Alarm clears an expired lease.
func (*lock) Alarm(ctx duro.Context, _ duro.AlarmInfo) error {
	st := ctx.Storage()
	s, err := loadLock(st)
	if err != nil || s.Owner == "" {
		return err
	}
	if !s.held(ctx.Now()) {
		s.Owner, s.Token, s.ExpiresMs = "", 0, 0
	}
	return saveLock(st, s)
}
