package shard

import (
	"testing"
	"unsafe"
)

func TestStripeIsOneCacheLine(t *testing.T) {
	if s := unsafe.Sizeof(stripe[int]{}); s != CacheLineSize {
		t.Fatalf("stripe is %d bytes, want %d", s, CacheLineSize)
	}
}
