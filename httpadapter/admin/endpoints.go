package admin

import (
	"bytes"
	"container/heap"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/allot-go/allot/engine"
)

// POST /keys: register a key, given or generated.
func (h *handler) register(w http.ResponseWriter, r *http.Request, c *call) (int, any, error) {
	var req registerReq
	if err := decode(w, r, &req, false); err != nil {
		return 0, nil, err
	}
	generated := req.Key == nil
	key, err := newKeyOr(req.Key)
	if err != nil {
		return 0, nil, err
	}
	c.keys = append(c.keys, key)
	limits, err := toLimits(req.Limits)
	if err != nil {
		return 0, nil, err
	}
	id := engine.IDOf(key)
	c.id = idHex(id)
	err = h.eng.Register(r.Context(), key, limits...)
	if errors.Is(err, engine.ErrKeyExists) && !generated {
		// Idempotent: the key as this request would leave it is a 200.
		st, serr := h.eng.Status(key)
		if serr == nil && !st.Revoked && !st.RotatedOut && sameLimits(limits, st.Limits) {
			return http.StatusOK, keyOf(id, st), nil
		}
		return 0, nil, fmt.Errorf("%w, with other limits, or revoked or rotated out", err)
	}
	if err != nil {
		return 0, nil, err
	}
	out := h.created(id, key, limits)
	if generated {
		out.Key = key // the only time the raw key is shown
	}
	w.Header().Set("Location", "keys/"+c.id)
	return http.StatusCreated, out, nil
}

// created returns the state of a key just created: read from the engine,
// or if that fails (the key was deleted meanwhile, the engine closed) its
// limits as registered, full.
func (h *handler) created(id engine.KeyID, key string, limits []engine.Limit) keyOut {
	st, err := h.eng.Status(key)
	if err != nil {
		st = engine.Status{}
		for _, l := range limits {
			st.Limits = append(st.Limits, engine.LimitStatus{Limit: l, Remaining: l.Quota()})
		}
	}
	return keyOf(id, st)
}

// GET /keys: a page of keys, by ID.
func (h *handler) list(_ http.ResponseWriter, r *http.Request, _ *call) (int, any, error) {
	q := r.URL.Query()
	var after *engine.KeyID
	if s := q.Get("after"); q.Has("after") {
		id, err := parseID(s, "after")
		if err != nil {
			return 0, nil, err
		}
		after = &id
	}
	limit := DefaultPageSize
	if s := q.Get("limit"); q.Has("limit") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxPageSize {
			return 0, nil, bad(fmt.Sprintf("limit must be an integer from 1 to %d", MaxPageSize))
		}
		limit = n
	}
	// One pass of Keys keeps the limit+1 lowest IDs above after (a heap
	// whose top is the highest of them): memory for a page, whatever the
	// number of keys.
	p := &page{}
	for info := range h.eng.Keys() {
		if after != nil && bytes.Compare(info.ID[:], after[:]) <= 0 {
			continue
		}
		if p.Len() <= limit {
			heap.Push(p, info)
		} else if bytes.Compare(info.ID[:], (*p)[0].ID[:]) < 0 {
			(*p)[0] = info
			heap.Fix(p, 0)
		}
	}
	infos := []engine.KeyInfo(*p)
	slices.SortFunc(infos, func(a, b engine.KeyInfo) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	out := pageOut{Keys: make([]keyOut, 0, min(len(infos), limit))}
	for i, info := range infos {
		if i == limit {
			out.Next = out.Keys[limit-1].ID
			break
		}
		k := keyOf(info.ID, info.Status)
		k.Recovered = info.Recovered
		out.Keys = append(out.Keys, k)
	}
	return http.StatusOK, out, nil
}

// page is a max-heap of keys by ID.
type page []engine.KeyInfo

func (p page) Len() int           { return len(p) }
func (p page) Less(i, j int) bool { return bytes.Compare(p[i].ID[:], p[j].ID[:]) > 0 }
func (p page) Swap(i, j int)      { p[i], p[j] = p[j], p[i] }
func (p *page) Push(x any)        { *p = append(*p, x.(engine.KeyInfo)) }
func (p *page) Pop() any {
	old := *p
	x := old[len(old)-1]
	*p = old[:len(old)-1]
	return x
}

// pathID parses the {id} of the request's path.
func pathID(r *http.Request, c *call) (engine.KeyID, error) {
	id, err := parseID(r.PathValue("id"), "the path's {id}")
	if err == nil {
		c.id = idHex(id)
	}
	return id, err
}

// after answers a change of key id that succeeded with the key's state,
// read just after; 204 if it can no longer be read (deleted meanwhile).
func after(id engine.KeyID, st engine.Status, err error) (int, any, error) {
	if err != nil {
		return http.StatusNoContent, nil, nil
	}
	return http.StatusOK, keyOf(id, st), nil
}

// state answers a read of key id's state.
func state(id engine.KeyID, st engine.Status, err error) (int, any, error) {
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, keyOf(id, st), nil
}

// deleted answers a delete.
func deleted(err error) (int, any, error) {
	if err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

// GET /keys/{id}
func (h *handler) statusID(_ http.ResponseWriter, r *http.Request, c *call) (int, any, error) {
	id, err := pathID(r, c)
	if err != nil {
		return 0, nil, err
	}
	st, err := h.eng.StatusID(id)
	return state(id, st, err)
}

// byID decodes the body of a call on the key the path names into body (nil:
// the body may be empty, or {}), and answers what f, the call, answers.
func (h *handler) byID(w http.ResponseWriter, r *http.Request, c *call, body any, f func(engine.KeyID) (int, any, error)) (int, any, error) {
	id, err := pathID(r, c)
	if err != nil {
		return 0, nil, err
	}
	optional := body == nil
	if optional {
		body = &noBody{}
	}
	if err := decode(w, r, body, optional); err != nil {
		return 0, nil, err
	}
	return f(id)
}

// changeID is byID for f, a change of the key, answered with the key's
// state after it.
func (h *handler) changeID(w http.ResponseWriter, r *http.Request, c *call, body any, f func(engine.KeyID) error) (int, any, error) {
	return h.byID(w, r, c, body, func(id engine.KeyID) (int, any, error) {
		if err := f(id); err != nil {
			return 0, nil, err
		}
		st, err := h.eng.StatusID(id)
		return after(id, st, err)
	})
}

// DELETE /keys/{id}
func (h *handler) deleteID(w http.ResponseWriter, r *http.Request, c *call) (int, any, error) {
	return h.byID(w, r, c, nil, func(id engine.KeyID) (int, any, error) { return deleted(h.eng.DeleteID(r.Context(), id)) })
}

// POST /keys/{id}/revoke
func (h *handler) revokeID(w http.ResponseWriter, r *http.Request, c *call) (int, any, error) {
	return h.changeID(w, r, c, nil, func(id engine.KeyID) error { return h.eng.RevokeID(r.Context(), id) })
}

// POST /keys/{id}/reset
func (h *handler) resetID(w http.ResponseWriter, r *http.Request, c *call) (int, any, error) {
	return h.changeID(w, r, c, nil, func(id engine.KeyID) error { return h.eng.ResetID(r.Context(), id) })
}

// POST /keys/{id}/top-up
func (h *handler) topUpID(w http.ResponseWriter, r *http.Request, c *call) (int, any, error) {
	var req amountReq
	return h.changeID(w, r, c, &req, func(id engine.KeyID) error {
		n, err := amount(req.Amount)
		if err != nil {
			return err
		}
		return h.eng.TopUpID(r.Context(), id, n)
	})
}

func amount(n *int64) (int64, error) {
	if n == nil {
		return 0, fmt.Errorf("%w: \"amount\" is required", engine.ErrInvalidAmount)
	}
	return *n, nil
}

// bodyKey returns the raw key a request's body names.
func bodyKey(k *string, c *call) (string, engine.KeyID, error) {
	if k == nil {
		return "", engine.KeyID{}, fmt.Errorf("%w: the body names no \"key\"", engine.ErrInvalidKey)
	}
	c.keys = append(c.keys, *k)
	id := engine.IDOf(*k)
	c.id = idHex(id)
	return *k, id, nil
}

// byKey decodes the body of a call by key, a B that names the key, and
// answers what f, the call on the key it names, answers.
func byKey[B any, P interface {
	*B
	named() *string
}](w http.ResponseWriter, r *http.Request, c *call, f func(req P, key string, id engine.KeyID) (int, any, error)) (int, any, error) {
	req := P(new(B))
	if err := decode(w, r, req, false); err != nil {
		return 0, nil, err
	}
	key, id, err := bodyKey(req.named(), c)
	if err != nil {
		return 0, nil, err
	}
	return f(req, key, id)
}

// changeKey is byKey for f, a change of the key, answered with the key's
// state after it.
func changeKey[B any, P interface {
	*B
	named() *string
}](h *handler, w http.ResponseWriter, r *http.Request, c *call, f func(req P, key string) error) (int, any, error) {
	return byKey(w, r, c, func(req P, key string, id engine.KeyID) (int, any, error) {
		if err := f(req, key); err != nil {
			return 0, nil, err
		}
		st, err := h.eng.Status(key)
		return after(id, st, err)
	})
}

// POST /by-key/status
func (h *handler) statusKey(w http.ResponseWriter, r *http.Request, c *call) (int, any, error) {
	return byKey(w, r, c, func(_ *keyReq, key string, id engine.KeyID) (int, any, error) {
		st, err := h.eng.Status(key)
		return state(id, st, err)
	})
}

// POST /by-key/revoke
func (h *handler) revokeKey(w http.ResponseWriter, r *http.Request, c *call) (int, any, error) {
	return changeKey(h, w, r, c, func(_ *keyReq, key string) error { return h.eng.Revoke(r.Context(), key) })
}

// POST /by-key/reset
func (h *handler) resetKey(w http.ResponseWriter, r *http.Request, c *call) (int, any, error) {
	return changeKey(h, w, r, c, func(_ *keyReq, key string) error { return h.eng.Reset(r.Context(), key) })
}

// POST /by-key/delete
func (h *handler) deleteKey(w http.ResponseWriter, r *http.Request, c *call) (int, any, error) {
	return byKey(w, r, c, func(_ *keyReq, key string, _ engine.KeyID) (int, any, error) {
		return deleted(h.eng.Delete(r.Context(), key))
	})
}

// POST /by-key/top-up
func (h *handler) topUpKey(w http.ResponseWriter, r *http.Request, c *call) (int, any, error) {
	return changeKey(h, w, r, c, func(req *topUpReq, key string) error {
		n, err := amount(req.Amount)
		if err != nil {
			return err
		}
		return h.eng.TopUp(r.Context(), key, n)
	})
}

// POST /by-key/set-limits
func (h *handler) setLimits(w http.ResponseWriter, r *http.Request, c *call) (int, any, error) {
	return changeKey(h, w, r, c, func(req *setLimitsReq, key string) error {
		limits, err := toLimits(req.Limits)
		if err != nil {
			return err
		}
		return h.eng.SetLimits(r.Context(), key, limits...)
	})
}

// POST /by-key/rotate: the new key, given or generated, takes over.
func (h *handler) rotate(w http.ResponseWriter, r *http.Request, c *call) (int, any, error) {
	return byKey(w, r, c, func(req *rotateReq, old string, oldID engine.KeyID) (int, any, error) {
		generated := req.NewKey == nil
		newKey, err := newKeyOr(req.NewKey)
		if err != nil {
			return 0, nil, err
		}
		c.keys = append(c.keys, newKey)
		var grace time.Duration
		if req.Grace != nil {
			if grace, err = time.ParseDuration(*req.Grace); err != nil {
				return 0, nil, fmt.Errorf("%w: \"grace\" is not a duration such as \"1h\"", engine.ErrInvalidAmount)
			}
		}
		if err := h.eng.Rotate(r.Context(), old, newKey, grace); err != nil {
			return 0, nil, err
		}
		id := engine.IDOf(newKey)
		st, err := h.eng.Status(newKey)
		if err != nil {
			st = engine.Status{}
		}
		out := keyOf(id, st)
		out.RotatedFrom = idHex(oldID)
		if generated {
			out.Key = newKey // the only time the raw key is shown
		}
		c.id = idHex(oldID) + "->" + out.ID
		w.Header().Set("Location", "../keys/"+out.ID)
		return http.StatusCreated, out, nil
	})
}

// newKeyOr returns *k, or without k a generated key.
func newKeyOr(k *string) (string, error) {
	if k != nil {
		return *k, nil
	}
	return newKey()
}

// GET /stats
func (h *handler) stats(_ http.ResponseWriter, _ *http.Request, _ *call) (int, any, error) {
	return http.StatusOK, statsOf(h.eng.Stats()), nil
}

// GET /openapi.json
func (h *handler) openapi(w http.ResponseWriter, _ *http.Request, _ *call) (int, any, error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(openAPI)
	return http.StatusOK, nil, errWritten
}

// errWritten tells endpoint that serve wrote the response itself.
var errWritten = errors.New("written")
