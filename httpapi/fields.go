package httpapi

import (
	"bytes"
	"encoding/json"
)

// checkFields refuses a JSON object whose field names are not exactly
// among known, or that names a field twice: encoding/json would match
// "Key" to "key" and keep the last of two "key"s, so a body could mean
// something other than it reads. A body that is not a well-formed object
// passes, for the decoder to word its error.
func checkFields(b []byte, known ...string) *inputError {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	var seen uint64 // bit i: known[i] seen; at most 64 known fields
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil
		}
		name, _ := t.(string)
		i := indexOf(known, name)
		switch {
		case i < 0:
			return unknownField(name, known...)
		case seen&(1<<i) != 0:
			return badInput(name, "field %q given twice", name)
		}
		seen |= 1 << i
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return nil
}

func indexOf(names []string, name string) int {
	for i, n := range names {
		if n == name {
			return i
		}
	}
	return -1
}
