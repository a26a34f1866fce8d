package engine

import "github.com/allot-go/allot/engine/internal/quota"

// The state of one limit fits in one 64-bit word, so that every decision is
// a single compare-and-swap. The word of a key's first limit also carries the
// key's flags, which makes revocation and the decrement one atomic step:
//
//	bit 63     revoked
//	bit 62     sealed: the word is final; the key's record is being replaced
//	bits 0-61  the limit's value, which only grows as units are granted
//	           (its encoding and arithmetic: package engine/internal/quota)
const (
	valueMask  = quota.ValueMask
	sealedBit  = valueMask + 1
	revokedBit = sealedBit << 1
	flagBits   = revokedBit | sealedBit
)

// Kind is numbered as quota.Kind, so that converting one to the other costs
// nothing. This fails to compile otherwise: a negative difference overflows
// Kind, a positive one makes the array longer than 0.
var _ [0]struct{} = [KindCredits - Kind(quota.Credits) +
	KindWindow - Kind(quota.Window) +
	KindMonth - Kind(quota.Month) +
	KindRate - Kind(quota.Rate)]struct{}{}

// lim returns what the arithmetic needs to know of a validated limit.
func (s *spec) lim() quota.Limit {
	return quota.Limit{Kind: quota.Kind(s.kind), Quota: s.quota, Period: s.period, Loc: s.loc}
}
