package shard_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"unsafe"

	"github.com/allot-go/allot/shard"
	"github.com/stretchr/testify/require"
)

func TestNewRejectsBadStripes(t *testing.T) {
	for _, n := range []int{-1, 0, 3, 6, 1000, shard.MaxStripes * 2} {
		_, err := shard.New[int](n)
		require.ErrorIs(t, err, shard.ErrInvalidStripes, "stripes=%d", n)
	}
	for _, n := range []int{1, 2, 64, shard.MaxStripes} {
		_, err := shard.New[int](n)
		require.NoError(t, err, "stripes=%d", n)
	}
}

func TestStoreLoadDelete(t *testing.T) {
	for _, stripes := range []int{1, 4, 64} {
		t.Run(fmt.Sprint(stripes), func(t *testing.T) {
			m, err := shard.New[int](stripes)
			require.NoError(t, err)
			const n = 5000
			for i := range n {
				k := fmt.Sprint("key-", i)
				m.Lock(k)
				p := m.Store(k, i)
				m.Unlock(k)
				require.Equal(t, i, *p)
			}
			require.Equal(t, n, m.Len())
			for i := range n {
				p := m.Load(fmt.Sprint("key-", i))
				require.NotNil(t, p)
				require.Equal(t, i, *p)
			}
			require.Nil(t, m.Load("absent"))
			// Replace keeps the count and publishes a new value.
			m.Lock("key-7")
			old := m.Load("key-7")
			m.Store("key-7", 70)
			m.Unlock("key-7")
			require.Equal(t, 7, *old, "a reader's old pointer stays valid")
			require.Equal(t, 70, *m.Load("key-7"))
			require.Equal(t, n, m.Len())
			m.Lock("key-7")
			m.Store("key-7", 7)
			m.Unlock("key-7")
			// Delete every other key, then reinsert: tombstones are reused or swept.
			for i := 0; i < n; i += 2 {
				k := fmt.Sprint("key-", i)
				m.Lock(k)
				require.True(t, m.Delete(k))
				require.False(t, m.Delete(k))
				m.Unlock(k)
			}
			require.Equal(t, n/2, m.Len())
			for i := range n {
				p := m.Load(fmt.Sprint("key-", i))
				require.Equal(t, i%2 == 1, p != nil, "key-%d", i)
			}
			seen := 0
			m.Range(func(k string, v *int) bool {
				require.Equal(t, fmt.Sprint("key-", *v), k)
				seen++
				return true
			})
			require.Equal(t, n/2, seen)
			for round := range 3 {
				for i := 0; i < n; i += 2 {
					k := fmt.Sprint("key-", i)
					m.Lock(k)
					m.Store(k, i+round)
					m.Delete(k)
					m.Unlock(k)
				}
			}
			require.Equal(t, n/2, m.Len())
		})
	}
}

func TestStoreCopiesKey(t *testing.T) {
	m, _ := shard.New[int](1)
	buf := []byte("abc")
	k := unsafe.String(&buf[0], len(buf))
	m.Lock(k)
	m.Store(k, 1)
	m.Unlock(k)
	buf[0] = 'x'
	require.NotNil(t, m.Load("abc"))
}

func TestRangeStops(t *testing.T) {
	m, _ := shard.New[int](4)
	for i := range 100 {
		k := fmt.Sprint(i)
		m.Lock(k)
		m.Store(k, i)
		m.Unlock(k)
	}
	calls := 0
	m.Range(func(string, *int) bool { calls++; return calls < 10 })
	require.Equal(t, 10, calls)
}

// Readers never lock; they must always find keys stored before they started,
// while writers insert (and grow tables) and replace concurrently.
func TestConcurrentReadersAndWriters(t *testing.T) {
	m, _ := shard.New[int](4)
	const pre = 1000
	for i := range pre {
		k := fmt.Sprint("pre-", i)
		m.Lock(k)
		m.Store(k, i)
		m.Unlock(k)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3000 {
				k := fmt.Sprint("w", w, "-", i)
				m.LockPair(k, "pre-1")
				m.Store(k, i)
				m.Store("pre-1", 1) // replace under a pair lock
				m.UnlockPair(k, "pre-1")
			}
		}()
	}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				for i := range pre {
					p := m.Load(fmt.Sprint("pre-", i))
					if p == nil || *p != i {
						errs <- fmt.Errorf("pre-%d: got %v", i, p)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	var all error
	for err := range errs {
		all = errors.Join(all, err)
	}
	require.NoError(t, all)
	require.Equal(t, pre+4*3000, m.Len())
}

func TestLockPairSameStripe(t *testing.T) {
	m, _ := shard.New[int](1)
	m.LockPair("a", "b") // one stripe: must lock once, not deadlock
	m.Store("a", 1)
	m.Store("b", 2)
	m.UnlockPair("a", "b")
	m.LockPair("b", "a")
	m.UnlockPair("b", "a")
}

func TestPadding(t *testing.T) {
	require.Equal(t, uintptr(shard.CacheLineSize), unsafe.Sizeof(shard.Counter{}))
}

func TestCounterUpdate(t *testing.T) {
	var c shard.Counter
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				c.Update(func(v uint64) (uint64, bool) { return v + 1, v < 5000 })
			}
		}()
	}
	wg.Wait()
	require.Equal(t, uint64(5000), c.Load())
	old, nw, ok := c.Update(func(v uint64) (uint64, bool) { return 0, false })
	require.Equal(t, uint64(5000), old)
	require.Equal(t, uint64(0), nw)
	require.False(t, ok)
}

func TestKeyOf(t *testing.T) {
	m, _ := shard.New[[3]int](4)
	for i := range 100 {
		k := fmt.Sprint("key-", i)
		m.Lock(k)
		p := m.Store(k, [3]int{i})
		m.Unlock(k)
		require.Equal(t, k, shard.KeyOf(p))
	}
	for i := range 100 {
		k := fmt.Sprint("key-", i)
		require.Equal(t, k, shard.KeyOf(m.Load(k)))
	}
}
