package bundle

import (
	"fmt"
	"unicode/utf8"

	"github.com/containerd/containerd/identifiers"
)

// ValidateID returns an error (wrapping errdefs.ErrInvalidArgument) unless id
// is a valid containerd identifier: not empty, at most 76 characters,
// alphanumerics separated by single '.', '_' or '-' (so never "..", never
// "/"). A valid id is safe as one path component.
func ValidateID(id string) error {
	if err := identifiers.Validate(id); err != nil {
		return fmt.Errorf("invalid task id: %w", err)
	}
	return nil
}

// ValidateNamespace returns an error (wrapping errdefs.ErrInvalidArgument)
// unless ns is a valid containerd namespace; namespaces follow the same
// identifier rule as ids.
func ValidateNamespace(ns string) error {
	if err := identifiers.Validate(ns); err != nil {
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
