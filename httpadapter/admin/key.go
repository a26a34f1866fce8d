package admin

import "github.com/allot-go/allot/engine"

// KeyPrefix starts every key the handler generates: engine.NewKey's
// prefix "sk" and its '_'.
const KeyPrefix = keyPrefix + "_"

const keyPrefix = "sk"

// newKey returns a new API key of engine.NewKey's format, with prefix
// keyPrefix: KeyPrefix, 30 random base62 characters from crypto/rand and a
// checksum of 6, which engine.CheckKey (and the middleware's
// WithKeyChecksum) verifies.
func newKey() (string, error) { return engine.NewKey(keyPrefix) }
