package sfv_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/httpadapter/internal/sfv"
)

func TestParseListValid(t *testing.T) {
	ms, err := sfv.ParseList(`"hour";q=1000;w=3600, "credits";q=5`)
	require.NoError(t, err)
	require.Len(t, ms, 2)
	assert.Equal(t, "hour", ms[0].Value)
	assert.Equal(t, []string{"q", "w"}, ms[0].Params.Keys())
	q, _ := ms[0].Params.Get("q")
	assert.Equal(t, int64(1000), q)
	w, _ := ms[0].Params.Get("w")
	assert.Equal(t, int64(3600), w)
	assert.Equal(t, "credits", ms[1].Value)
	_, ok := ms[1].Params.Get("w")
	assert.False(t, ok)
}

func TestParseListBareItems(t *testing.T) {
	ms, err := sfv.ParseList(`tok/en:x;a;b=?0, -42, 3.14, "a\"b\\c", :aGVsbG8=:, ?1, @1700000000, *star`)
	require.NoError(t, err)
	want := []any{sfv.Token("tok/en:x"), int64(-42), 3.14, `a"b\c`, []byte("hello"), true, sfv.Date(1700000000), sfv.Token("*star")}
	require.Len(t, ms, len(want))
	for i, w := range want {
		assert.Equal(t, w, ms[i].Value, "member %d", i)
	}
	a, _ := ms[0].Params.Get("a")
	b, _ := ms[0].Params.Get("b")
	assert.Equal(t, true, a)
	assert.Equal(t, false, b)
}

func TestParseListInnerAndWhitespace(t *testing.T) {
	ms, err := sfv.ParseList(`  ( 1  "x";p=2 );q=3 ,	y  `)
	require.NoError(t, err)
	require.Len(t, ms, 2)
	assert.True(t, ms[0].Inner)
	require.Len(t, ms[0].List, 2)
	assert.Equal(t, int64(1), ms[0].List[0].Value)
	p, _ := ms[0].List[1].Params.Get("p")
	assert.Equal(t, int64(2), p)
	q, _ := ms[0].Params.Get("q")
	assert.Equal(t, int64(3), q)
	assert.Equal(t, sfv.Token("y"), ms[1].Value)
}

func TestParseListLinesAndEmpty(t *testing.T) {
	ms, err := sfv.ParseList(`a;q=1`, `b;q=2`)
	require.NoError(t, err)
	require.Len(t, ms, 2)
	ms, err = sfv.ParseList("")
	require.NoError(t, err)
	assert.Empty(t, ms)
}

func TestParseListDuplicateParam(t *testing.T) {
	ms, err := sfv.ParseList(`a;x=1;y=2;x=3`)
	require.NoError(t, err)
	assert.Equal(t, []string{"x", "y"}, ms[0].Params.Keys())
	x, _ := ms[0].Params.Get("x")
	assert.Equal(t, int64(3), x)
}

func TestParseListInvalid(t *testing.T) {
	for _, s := range []string{
		`a,`,                    // trailing comma
		`a,,b`,                  // empty member
		`"unterminated`,         // string
		`"bad\n"`,               // escape
		"\"ctl\x01\"",           // control character
		`"é"`,                   // non-ASCII
		`1234567890123456`,      // 16-digit integer
		`1234567890123.5`,       // 13 integer digits in a decimal
		`1.2345`,                // 4 fractional digits
		`1.`,                    // no fractional digit
		`-`,                     // no digit
		`a;Q=1`,                 // upper-case key
		`a;=1`,                  // empty key
		`a;q=`,                  // missing value
		`a b`,                   // two items
		`(1 2`,                  // unterminated inner list
		`(1,2)`,                 // comma in inner list
		`?2`,                    // boolean
		`:!!:`,                  // base64
		`@1.5`,                  // date
		`a;q=1 ;w=2`,            // space before ';'
		`"hour";q=1000;w=3600,`, // trailing comma
	} {
		_, err := sfv.ParseList(s)
		assert.True(t, errors.Is(err, sfv.ErrSyntax), "%q: %v", s, err)
	}
}
