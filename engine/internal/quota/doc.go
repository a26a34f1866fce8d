// Package quota is the arithmetic of one limit: how its state is encoded in
// a word, how a step takes or gives back units at a given time, and the
// lease marks that bound how far the state may move before a reservation is
// durable. It is pure: it imports nothing but the standard library, holds no
// state, reads no clock (every time is an argument, in ns since the Unix
// epoch) and never locks. Package engine validates a Limit before it hands
// it here; the functions assume a valid one (see the bounds in
// engine/limit.go) and a time inside [engine.MinTime, engine.MaxTime).
//
// A value fits in the low 62 bits of a word (ValueMask); the engine keeps
// its flags in the two bits above. A value only grows as units are
// granted:
//
//	Credits:           units spent (above the quota after a shrink)
//	Window, Month:     bits 32-61 the window index mod 2^30,
//	                   bits 0-31 the units used in that window
//	Rate:              the theoretical arrival time (TAT), ns since the epoch
package quota
