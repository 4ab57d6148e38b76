package httpapi

import "encoding/json"

// checkFields refuses a JSON object whose field names are not exactly
// among known, or that names a field twice: encoding/json would match
// "Key" to "key" and keep the last of two "key"s, so a body could mean
// something other than it reads. It walks the top level only, without
// allocating for the plain names clients send. A body that is not a
// well-formed object passes, for the decoder to word its error.
func checkFields(b []byte, known ...string) *inputError {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil
	}
	var seen uint64 // bit k: known[k] seen; at most 64 known fields
	for i = skipSpace(b, i+1); i < len(b) && b[i] != '}'; {
		end := skipString(b, i)
		if end < 0 {
			return nil
		}
		raw := b[i+1 : end-1]
		k := -1
		for j, name := range known {
			if string(raw) == name {
				k = j
				break
			}
		}
		if k < 0 {
			var name string
			if json.Unmarshal(b[i:end], &name) != nil {
				return nil
			}
			if k = indexOf(known, name); k < 0 { // an escaped known name is that name
				return unknownField(name, known...)
			}
		}
		if seen&(1<<k) != 0 {
			return badInput(known[k], "field %q given twice", known[k])
		}
		seen |= 1 << k
		if i = skipSpace(b, end); i >= len(b) || b[i] != ':' {
			return nil
		}
		if i = skipValue(b, i+1); i < 0 {
			return nil
		}
		if i = skipSpace(b, i); i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
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

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the JSON string at b[i], or -1.
func skipString(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index after the JSON value that starts at or
// after b[i] (at the top level: up to a ',' or '}' outside any nesting),
// or -1.
func skipValue(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		switch b[i] {
		case '"':
			if i = skipString(b, i); i < 0 {
				return -1
			}
			continue
		case '{', '[':
			depth++
		case ']':
			depth--
		case '}':
			if depth == 0 {
				return i
			}
			depth--
		case ',':
			if depth == 0 {
				return i
			}
		}
		if depth < 0 {
			return -1
		}
		i++
	}
	return -1
}
