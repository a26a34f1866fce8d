package redisstore

import (
	"context"

	"github.com/allot-go/allot/engine"
)

// PointForTest runs the first write of Rotate alone (the pointer of key
// newID to pool p of registration reg), as a Rotate that crashed before
// its second write leaves it.
func (s *Store) PointForTest(ctx context.Context, newID, p engine.KeyID, reg uint64) (bool, error) {
	return s.point(ctx, newID, p, reg)
}
