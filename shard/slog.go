package shard

import (
	"bytes"
	"context"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// hclogWriter bridges hashicorp/raft's hclog output into slog.
type hclogWriter struct{ log *slog.Logger }

func (w hclogWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	lvl := slog.LevelInfo
	for tag, l := range map[string]slog.Level{"[ERROR]": slog.LevelError, "[WARN]": slog.LevelWarn, "[DEBUG]": slog.LevelDebug, "[TRACE]": slog.LevelDebug - 4} {
		if i := bytes.Index(line, []byte(tag)); i >= 0 {
			lvl = l
			line = bytes.TrimSpace(line[i+len(tag):])
			break
		}
	}
	w.log.Log(context.Background(), lvl, string(line))
	return len(p), nil
}

func newHCLog(log *slog.Logger) hclog.Logger {
	lvl := hclog.Info
	switch {
	case log.Enabled(context.Background(), slog.LevelDebug):
		lvl = hclog.Debug
	case !log.Enabled(context.Background(), slog.LevelInfo):
		lvl = hclog.Warn
	}
	return hclog.New(&hclog.LoggerOptions{Name: "raft", Level: lvl, Output: hclogWriter{log}, DisableTime: true})
}

// HCLogger returns an hclog.Logger that writes to log, for Raft transports.
func HCLogger(log *slog.Logger) hclog.Logger { return newHCLog(log) }
