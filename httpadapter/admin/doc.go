// Package admin is an HTTP API for an engine's keys, for operators: JSON
// over HTTP to register, inspect, list, revoke, delete, reset, top up,
// change and rotate keys, described by an OpenAPI 3.1 document it serves.
//
//	h := admin.Handler(eng, admin.WithAuthorize(func(r *http.Request) bool {
//		return subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+adminToken)) == 1
//	}))
//	mux.Handle("/admin/", http.StripPrefix("/admin", h))
//
// # Deny by default
//
// Without WithAuthorize every request is refused with 403, openapi.json
// included. The authorizer sees each request first, before its body is
// read; a request it refuses gets 403, or 401 with the WWW-Authenticate
// challenge of WithChallenge. Serve the handler on an address only
// operators reach, as well.
//
// # Endpoints
//
// Paths are relative to where the handler is mounted (http.StripPrefix).
// A key is named by its ID (the hex SHA-256 of the raw key, which
// engine.Engine.Keys lists and which is not secret) in the path, or by the
// raw key in the JSON body: a raw key is never put in a URL, where it
// would reach access logs.
//
//	POST   /keys                register {"key"?, "limits"}          201, or 200 if it exists with those limits
//	GET    /keys?after=&limit=  list, by ID                           200 {"keys", "next"?}
//	GET    /keys/{id}           status                                200
//	DELETE /keys/{id}           delete                                204
//	POST   /keys/{id}/revoke    revoke                                200
//	POST   /keys/{id}/reset     reset                                 200
//	POST   /keys/{id}/top-up    top up {"amount"}                     200
//	POST   /by-key/status       status {"key"}                        200
//	POST   /by-key/revoke       revoke {"key"}                        200
//	POST   /by-key/delete       delete {"key"}                        204
//	POST   /by-key/reset        reset {"key"}                         200
//	POST   /by-key/top-up       top up {"key", "amount"}              200
//	POST   /by-key/set-limits   set limits {"key", "limits"}          200
//	POST   /by-key/rotate       rotate {"key", "new_key"?, "grace"?}  201
//	GET    /stats               engine.Engine.Stats                   200
//	GET    /openapi.json        the OpenAPI 3.1 document              200
//
// Set limits and rotate have no by-ID form: the engine has no SetLimits
// or Rotate by ID. GET also answers HEAD.
//
// A change answers the key's state, read just after it (or 204 if it can
// no longer be read: the key was deleted meanwhile). A key in a response
// is {"id", "revoked", "rotated_out", "grace_until"?, "recovered"?,
// "limits"}, each limit with the members of its kind (below), its name,
// "remaining" and "reset_after".
//
// # Generated keys
//
// Register without "key", or rotate without "new_key", generates a key:
// engine.NewKey("sk"): "sk_", 30 base62 characters from crypto/rand (about
// 178 bits) and a checksum of 6 that engine.CheckKey verifies, so the
// middleware's WithKeyChecksum(true) accepts them. The response's
// "key" member is the only time it is shown: no other response, and no log
// line, holds a raw key. A key the request gave is never echoed.
//
// # Limits
//
// A limit is a JSON object by kind, each with an optional "name":
//
//	{"kind":"credits","quota":100}
//	{"kind":"window","quota":1000,"period":"1h"}
//	{"kind":"month","quota":5,"location":"UTC"}
//	{"kind":"rate","n":10,"per":"1s","burst":20}
//
// Durations are Go durations ("1h", "500ms"). A month's location is an IANA
// time zone, UTC by default ("Local" is refused: the client cannot know
// the server's zone), loaded from the system's zoneinfo unless the program
// imports time/tzdata. A member of another kind, a missing member or a
// value the engine refuses is a 400 whose detail is the engine's message
// (allot: invalid limit: ...).
//
// # Requests
//
// A body is one JSON value, Content-Type application/json (415 otherwise),
// at most MaxBody (64 KiB; 413 beyond), with no member the endpoint does
// not take (400, json.Decoder.DisallowUnknownFields) and nothing after it
// (400). Calls without input (revoke, reset and delete by ID) take no body
// or {}. A query parameter other than GET /keys's after and limit is a 400.
//
// # Status codes
//
// Every error is an RFC 9457 problem document (application/problem+json)
// of type about:blank, with a "code" member for programs:
//
//	400 bad_request           malformed JSON, unknown member, trailing data, bad query
//	400 invalid_key           engine.ErrInvalidKey; also a malformed ID
//	400 invalid_amount        engine.ErrInvalidAmount (top up, grace)
//	400 invalid_limit         engine.ErrInvalidLimit
//	401 unauthorized          refused by the authorizer, with WithChallenge
//	403 forbidden             refused by the authorizer, or no authorizer
//	404 unknown_key           engine.ErrUnknownKey
//	404 not_found             no such endpoint
//	405 method_not_allowed    with Allow
//	409 key_exists            engine.ErrKeyExists (register with other limits, rotate to an existing key)
//	409 rotated               engine.ErrRotated
//	409 key_revoked           engine.ErrKeyRevoked (rotate)
//	409 rotation_chain        engine.ErrRotationChain
//	409 no_credits            engine.ErrNoCredits (top up of a key without credits)
//	413 body_too_large        a body over 64 KiB
//	415 unsupported_media_type
//	499 canceled              the request's context was canceled: the client went away
//	500 clock                 engine.ErrClock
//	500 internal              anything else (the detail is logged, not answered)
//	503 closed                engine.ErrClosed; also a nil engine (unavailable)
//	503 store                 engine.ErrStore
//	503 timeout               the request's context passed its deadline
//
// A revoke that gets 503 or 499 while its revocation is written has
// revoked the key in memory all the same (see engine.Engine.Revoke): call
// it again to make it durable.
//
// # Idempotence
//
// Register of a key that exists with the same limits, not revoked and not
// rotated out, is 200 and changes nothing; with other limits, or revoked,
// or rotated out, it is 409. Revoke of a revoked key is 200; reset and
// set limits to the same limits may be repeated. Delete of a key that is
// not there (never registered, or deleted already) is 404, like every
// call on an unknown key: a retry of a delete whose answer was lost learns
// that the key is gone, and a mistyped ID is not taken for a success. Top
// up adds each time, and rotate again is 409 (the key was rotated out).
//
// # Listing
//
// GET /keys lists the keys in the order of their IDs: limit (1 to
// MaxPageSize, default DefaultPageSize) keys whose ID is above after, and
// "next", the after of the next page, unless the page is the last. Each
// page is one pass of engine.Engine.Keys, which hashes every key and does
// not stop Consume: a key registered or deleted while the pages are read
// may be listed or not; every other key is listed exactly once.
//
// # Logging
//
// WithLogger logs one line per request: the operation, the status, the
// key's ID, the remote address and an error's detail; never the URL nor a
// raw key.
package admin
