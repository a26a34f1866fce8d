package admin_test

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter/admin"
)

// memStore keeps records in memory, across engines: a restart.
type memStore struct {
	mu   sync.Mutex
	recs map[engine.KeyID]engine.Record
}

func (s *memStore) Load(_ context.Context, fn func(engine.Record) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.recs {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

func (s *memStore) Save(_ context.Context, recs ...engine.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		if r.Deleted {
			delete(s.recs, r.ID)
		} else {
			s.recs[r.ID] = r
		}
	}
	return nil
}

func (s *memStore) Close() error { return nil }

// TestRecoveredKeys: after a restart, keys not named since are listed by
// ID as recovered, and an operator who knows only their IDs can revoke,
// reset, top up and delete them.
func TestRecoveredKeys(t *testing.T) {
	st := &memStore{recs: map[engine.KeyID]engine.Record{}}
	eng, err := engine.New(engine.WithStore(st))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"alpha", "beta"} {
		if err := eng.Register(t.Context(), k, engine.Credits(10)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := eng.Consume(t.Context(), "alpha", 4); err != nil {
		t.Fatal(err)
	}
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}

	eng = newEngine(t, engine.WithStore(st))
	h := admin.Handler(eng, allowAll)
	pg := want[keyPage](t, do(t, h, "GET", "/keys", ""), http.StatusOK)
	if len(pg.Keys) != 2 {
		t.Fatalf("%d keys after the restart", len(pg.Keys))
	}
	for _, k := range pg.Keys {
		if !k.Recovered || (k.ID != idOf("alpha") && k.ID != idOf("beta")) {
			t.Fatalf("listed %+v", k)
		}
	}
	a := idOf("alpha")
	if k := want[key](t, do(t, h, "GET", "/keys/"+a, ""), http.StatusOK); k.Limits[0].Remaining > 6 {
		t.Fatalf("alpha recovered with %+v", k.Limits)
	}
	if k := want[key](t, do(t, h, "POST", "/keys/"+a+"/top-up", `{"amount":4}`), http.StatusOK); k.Limits[0].Quota != 14 {
		t.Fatalf("top up %+v", k.Limits)
	}
	if k := want[key](t, do(t, h, "POST", "/keys/"+a+"/reset", ""), http.StatusOK); k.Limits[0].Remaining != 14 {
		t.Fatalf("reset %+v", k.Limits)
	}
	if k := want[key](t, do(t, h, "POST", "/keys/"+a+"/revoke", ""), http.StatusOK); !k.Revoked {
		t.Fatalf("revoke %+v", k)
	}
	if d, _ := eng.Consume(t.Context(), "alpha", 1); d.Reason != engine.Revoked {
		t.Fatalf("alpha after revoke by ID: %v", d.Reason)
	}
	// Named by its raw key now, beta is no longer "recovered".
	want[key](t, do(t, h, "POST", "/by-key/status", `{"key":"beta"}`), http.StatusOK)
	for _, k := range want[keyPage](t, do(t, h, "GET", "/keys", ""), http.StatusOK).Keys {
		if k.ID == idOf("beta") && k.Recovered {
			t.Fatalf("beta still recovered: %+v", k)
		}
	}
	want[struct{}](t, do(t, h, "DELETE", "/keys/"+idOf("beta"), ""), http.StatusNoContent)
	want[struct{}](t, do(t, h, "DELETE", "/keys/"+a, ""), http.StatusNoContent)
	if pg := want[keyPage](t, do(t, h, "GET", "/keys", ""), http.StatusOK); len(pg.Keys) != 0 {
		t.Fatalf("%d keys after deleting both", len(pg.Keys))
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.recs) != 0 {
		t.Fatalf("%d records left in the store", len(st.recs))
	}
}
