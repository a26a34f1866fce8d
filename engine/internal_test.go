package engine

import (
	"testing"
	"unsafe"

	"github.com/allot-go/allot/engine/internal/quota"
	"github.com/allot-go/allot/shard"
)

// The map node (hash, key header and entry) must be exactly one cache line:
// Go allocates 64-byte objects 64-byte aligned, so each key's hot word then
// has a line of its own, and the lookup and the CAS touch one line.
func TestEntryIsOneCacheLine(t *testing.T) {
	if s := unsafe.Sizeof(shard.Node[entry]{}); s != shard.CacheLineSize {
		t.Fatalf("map node is %d bytes, want %d", s, shard.CacheLineSize)
	}
	if s := unsafe.Sizeof(tracker{}); s != shard.CacheLineSize {
		t.Fatalf("tracker is %d bytes, want %d", s, shard.CacheLineSize)
	}
}

// The word layout keeps the flags out of every value (the value's own
// fields: quota.TestValueLayout).
func TestWordLayout(t *testing.T) {
	if revokedBit&valueMask != 0 || sealedBit&valueMask != 0 || revokedBit == sealedBit {
		t.Fatal("flags overlap the value")
	}
	if uint64(MaxCredits) > valueMask || uint64(MaxCredits) != quotaMask {
		t.Fatalf("MaxCredits %d must fill the entry's quota field and fit a word", int64(MaxCredits))
	}
	if uint64(MaxWindowQuota) > quotaMask || uint64(KindRate)<<kindShift>>kindShift != uint64(KindRate) {
		t.Fatal("quota and kind must fit the entry's qm field")
	}
	if flagBits&^(revokedBit|sealedBit) != 0 || flagBits|valueMask != ^uint64(0) {
		t.Fatal("the flags and the value must share the word exactly")
	}
	if MaxWindowQuota != quota.UsedMask {
		t.Fatal("MaxWindowQuota must fill the used field")
	}
}
