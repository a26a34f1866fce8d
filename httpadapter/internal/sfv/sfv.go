// Package sfv parses HTTP Structured Field Lists (RFC 9651, section 4.2),
// for tests that check the fields the middleware writes. It supports every
// bare item type but Display Strings.
package sfv

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Token is a Token bare item.
type Token string

// Date is a Date bare item: seconds since the Unix epoch.
type Date int64

// Param is one parameter of an item or inner list.
type Param struct {
	Key   string
	Value any // int64, float64, string, Token, []byte, bool or Date
}

// Params are an item's parameters, in order. A key given twice keeps its
// first position and its last value, as RFC 9651 says.
type Params []Param

// Get returns the value of key.
func (ps Params) Get(key string) (any, bool) {
	for _, p := range ps {
		if p.Key == key {
			return p.Value, true
		}
	}
	return nil, false
}

// Keys returns the parameter keys, in order.
func (ps Params) Keys() []string {
	ks := make([]string, len(ps))
	for i, p := range ps {
		ks[i] = p.Key
	}
	return ks
}

// Item is a bare item with parameters.
type Item struct {
	Value  any // int64, float64, string, Token, []byte, bool or Date
	Params Params
}

// Member is a member of a List: an Item, or an inner list if Inner is true.
type Member struct {
	Item
	Inner bool
	List  []Item // the inner list's items, if Inner
}

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = errors.New("sfv: syntax error")

// ParseList parses a List field from its field lines, which are joined with
// ", " first (RFC 9651, section 4.2). An empty field is an empty List.
func ParseList(lines ...string) ([]Member, error) {
	p := parser{s: strings.Join(lines, ", ")}
	p.skipSP()
	ms, err := p.list()
	if err != nil {
		return nil, err
	}
	p.skipSP()
	if !p.eof() {
		return nil, p.errorf("trailing characters")
	}
	return ms, nil
}

type parser struct {
	s string
	i int
}

func (p *parser) eof() bool { return p.i >= len(p.s) }

func (p *parser) peek() byte {
	if p.eof() {
		return 0
	}
	return p.s[p.i]
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w at offset %d of %q: %s", ErrSyntax, p.i, p.s, fmt.Sprintf(format, args...))
}

func (p *parser) skipSP() {
	for !p.eof() && p.s[p.i] == ' ' {
		p.i++
	}
}

func (p *parser) skipOWS() {
	for !p.eof() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *parser) list() ([]Member, error) {
	var ms []Member
	for !p.eof() {
		m, err := p.member()
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
		p.skipOWS()
		if p.eof() {
			return ms, nil
		}
		if p.peek() != ',' {
			return nil, p.errorf("expected ','")
		}
		p.i++
		p.skipOWS()
		if p.eof() {
			return nil, p.errorf("trailing ','")
		}
	}
	return ms, nil
}

func (p *parser) member() (Member, error) {
	if p.peek() == '(' {
		return p.innerList()
	}
	it, err := p.item()
	return Member{Item: it}, err
}

func (p *parser) innerList() (Member, error) {
	p.i++ // '('
	m := Member{Inner: true, List: []Item{}}
	for {
		p.skipSP()
		if p.eof() {
			return m, p.errorf("unterminated inner list")
		}
		if p.peek() == ')' {
			p.i++
			ps, err := p.params()
			m.Params = ps
			return m, err
		}
		it, err := p.item()
		if err != nil {
			return m, err
		}
		m.List = append(m.List, it)
		if c := p.peek(); c != ' ' && c != ')' {
			return m, p.errorf("expected ' ' or ')' in inner list")
		}
	}
}

func (p *parser) item() (Item, error) {
	v, err := p.bareItem()
	if err != nil {
		return Item{}, err
	}
	ps, err := p.params()
	return Item{Value: v, Params: ps}, err
}

func (p *parser) params() (Params, error) {
	var ps Params
	for p.peek() == ';' {
		p.i++
		p.skipSP()
		k, err := p.key()
		if err != nil {
			return nil, err
		}
		var v any = true
		if p.peek() == '=' {
			p.i++
			if v, err = p.bareItem(); err != nil {
				return nil, err
			}
		}
		replaced := false
		for j := range ps {
			if ps[j].Key == k {
				ps[j].Value, replaced = v, true
			}
		}
		if !replaced {
			ps = append(ps, Param{Key: k, Value: v})
		}
	}
	return ps, nil
}

func isLCAlpha(c byte) bool { return 'a' <= c && c <= 'z' }
func isAlpha(c byte) bool   { return isLCAlpha(c) || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool   { return '0' <= c && c <= '9' }

// isTChar reports an RFC 9110 tchar.
func isTChar(c byte) bool {
	return isAlpha(c) || isDigit(c) || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func (p *parser) key() (string, error) {
	start := p.i
	if c := p.peek(); !isLCAlpha(c) && c != '*' {
		return "", p.errorf("bad key")
	}
	for !p.eof() {
		c := p.s[p.i]
		if !isLCAlpha(c) && !isDigit(c) && c != '_' && c != '-' && c != '.' && c != '*' {
			break
		}
		p.i++
	}
	return p.s[start:p.i], nil
}

func (p *parser) bareItem() (any, error) {
	switch c := p.peek(); {
	case c == '-' || isDigit(c):
		return p.number()
	case c == '"':
		return p.str()
	case c == '*' || isAlpha(c):
		return p.token(), nil
	case c == ':':
		return p.binary()
	case c == '?':
		return p.boolean()
	case c == '@':
		p.i++
		v, err := p.number()
		if err != nil {
			return nil, err
		}
		n, ok := v.(int64)
		if !ok {
			return nil, p.errorf("date must be an integer")
		}
		return Date(n), nil
	}
	return nil, p.errorf("unexpected %q", p.peek())
}

func (p *parser) number() (any, error) {
	start := p.i
	if p.peek() == '-' {
		p.i++
	}
	if !isDigit(p.peek()) {
		return nil, p.errorf("expected a digit")
	}
	digits, dot := 0, -1
	for !p.eof() {
		c := p.s[p.i]
		switch {
		case isDigit(c):
			digits++
		case c == '.' && dot < 0:
			if digits > 12 {
				return nil, p.errorf("decimal with more than 12 integer digits")
			}
			dot = digits
		default:
			goto done
		}
		p.i++
		if dot < 0 && digits > 15 {
			return nil, p.errorf("integer with more than 15 digits")
		}
	}
done:
	text := p.s[start:p.i]
	if dot < 0 {
		n, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			return nil, p.errorf("bad integer %q", text)
		}
		return n, nil
	}
	if frac := digits - dot; frac < 1 || frac > 3 {
		return nil, p.errorf("decimal needs 1 to 3 fractional digits")
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return nil, p.errorf("bad decimal %q", text)
	}
	return f, nil
}

func (p *parser) str() (string, error) {
	p.i++ // '"'
	var b strings.Builder
	for !p.eof() {
		c := p.s[p.i]
		p.i++
		switch {
		case c == '\\':
			if p.eof() {
				return "", p.errorf("unterminated escape")
			}
			e := p.s[p.i]
			if e != '"' && e != '\\' {
				return "", p.errorf("bad escape \\%c", e)
			}
			b.WriteByte(e)
			p.i++
		case c == '"':
			return b.String(), nil
		case c < 0x20 || c > 0x7e:
			return "", p.errorf("invalid character %#x in string", c)
		default:
			b.WriteByte(c)
		}
	}
	return "", p.errorf("unterminated string")
}

func (p *parser) token() Token {
	start := p.i
	p.i++
	for !p.eof() && (isTChar(p.s[p.i]) || p.s[p.i] == ':' || p.s[p.i] == '/') {
		p.i++
	}
	return Token(p.s[start:p.i])
}

func (p *parser) binary() ([]byte, error) {
	p.i++ // ':'
	end := strings.IndexByte(p.s[p.i:], ':')
	if end < 0 {
		return nil, p.errorf("unterminated byte sequence")
	}
	enc := p.s[p.i : p.i+end]
	b, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil, p.errorf("bad base64: %v", err)
	}
	p.i += end + 1
	return b, nil
}

func (p *parser) boolean() (bool, error) {
	p.i++ // '?'
	switch p.peek() {
	case '0':
		p.i++
		return false, nil
	case '1':
		p.i++
		return true, nil
	}
	return false, p.errorf("bad boolean")
}
