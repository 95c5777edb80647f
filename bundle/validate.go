package bundle

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// ErrInvalid is wrapped by ValidateID's and ValidateNamespace's errors.
var ErrInvalid = errors.New("invalid argument")

// maxIdentifierLen is containerd's identifiers.maxLength.
const maxIdentifierLen = 76

// validateIdentifier is containerd's identifiers.Validate (the tests hold
// it to containerd's own on every input they try): not empty, at most 76
// bytes, alphanumerics separated by single '.', '_' or '-'. Written out
// rather than imported: containerd's package compiles a regexp at start-up
// and pulls in its errdefs and gRPC status packages.
func validateIdentifier(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("identifier must not be empty: %w", ErrInvalid)
	case len(s) > maxIdentifierLen:
		return fmt.Errorf("identifier %q greater than maximum length (%d characters): %w", s, maxIdentifierLen, ErrInvalid)
	}
	prevSep := true // no separator first
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			prevSep = false
		case (c == '.' || c == '_' || c == '-') && !prevSep:
			prevSep = true
		default:
			return fmt.Errorf("identifier %q must be alphanumerics separated by single '.', '_' or '-': %w", s, ErrInvalid)
		}
	}
	if prevSep {
		return fmt.Errorf("identifier %q must not end in a separator: %w", s, ErrInvalid)
	}
	return nil
}

// ValidateID returns an error (wrapping ErrInvalid) unless id
// is a valid containerd identifier: not empty, at most 76 characters,
// alphanumerics separated by single '.', '_' or '-' (so never "..", never
// "/"). A valid id is safe as one path component.
func ValidateID(id string) error {
	if err := validateIdentifier(id); err != nil {
		return fmt.Errorf("invalid task id: %w", err)
	}
	return nil
}

// ValidateNamespace returns an error (wrapping ErrInvalid)
// unless ns is a valid containerd namespace; namespaces follow the same
// identifier rule as ids.
func ValidateNamespace(ns string) error {
	if err := validateIdentifier(ns); err != nil {
		return fmt.Errorf("invalid namespace: %w", err)
	}
	return nil
}

// maxNameLen bounds a runtime binary name or a socket address: longer
// content is garbage, not a path anyone wrote.
const maxNameLen = 4096

// checkName rejects what cannot be a binary name or an address written by
// containerd: empty, absurdly long, not UTF-8, or holding NUL or another
// control character.
func checkName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty")
	case len(s) > maxNameLen:
		return fmt.Errorf("%d bytes long, more than %d", len(s), maxNameLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("not valid UTF-8: %.40q", s)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("holds control character %U: %.40q", r, s)
		}
	}
	return nil
}
