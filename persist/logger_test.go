package persist_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/allot-go/allot/persist"
	"github.com/stretchr/testify/require"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestBadgerLogsGoToSlog(t *testing.T) {
	var buf syncBuf
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := persist.Open(t.TempDir(), persist.WithLogger(l))
	require.NoError(t, err)
	require.NoError(t, st.Close())
	out := buf.String()
	require.Contains(t, out, "component=badger")
	require.Greater(t, strings.Count(out, "\n"), 1)
}
