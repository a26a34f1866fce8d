package admin

// Route is an endpoint of the handler, for the tests of package admin_test.
type Route struct{ Method, Path, Op string }

// Routes returns the table the handler registers its endpoints from.
func Routes() []Route {
	out := make([]Route, len(routes))
	for i, r := range routes {
		out[i] = Route{r.method, r.path, r.op}
	}
	return out
}

// NewKey is the key generator of register and rotate.
func NewKey() string {
	k, err := newKey()
	if err != nil {
		panic(err)
	}
	return k
}

// Codes returns every problem code the handler may answer.
func Codes() []string {
	out := []string{codeUnauthorized, codeForbidden, codeNotFound, codeMethod, codeTooLarge, codeMediaType, codeBadRequest, codeUnavailable, codeInternal}
	for _, m := range engineErrors {
		out = append(out, m.code)
	}
	return out
}
