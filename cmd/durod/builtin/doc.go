// Package builtin holds the object classes durod serves without any user
// code: a 64-bit counter ("counter") and a string key-value map ("kv").
//
// Every method takes and returns JSON. Malformed arguments, empty keys and
// other bad input fail with an error wrapping duro.ErrInvalidArgument, and in
// that case nothing is written. Storage errors are returned unchanged.
package builtin
