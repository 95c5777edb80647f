package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// TestDocLinks: every relative link of README.md and docs/*.md names a file
// that exists and, with a #fragment, a heading of that file (GitHub's
// anchors: lowercase, punctuation dropped, spaces to hyphens).
func TestDocLinks(t *testing.T) {
	root := filepath.Join("..", "..")
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files := append([]string{filepath.Join(root, "README.md")}, docs...)
	if len(docs) == 0 {
		t.Fatal("no docs/*.md")
	}
	checked := 0
	for _, f := range files {
		text := readFile(t, f)
		for _, l := range links(text) {
			if strings.Contains(l, "://") || strings.HasPrefix(l, "mailto:") {
				continue
			}
			checked++
			path, frag, _ := strings.Cut(l, "#")
			target := f
			if path != "" {
				target = filepath.Join(filepath.Dir(f), path)
			}
			fi, err := os.Stat(target)
			if err != nil {
				t.Errorf("%s: link %q: %v", f, l, err)
				continue
			}
			if frag == "" {
				continue
			}
			if fi.IsDir() || !strings.HasSuffix(target, ".md") {
				t.Errorf("%s: link %q: a fragment on a non-markdown target", f, l)
				continue
			}
			if !anchors(readFile(t, target))[frag] {
				t.Errorf("%s: link %q: no heading with anchor #%s in %s", f, l, frag, target)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no relative links found: the link pattern is wrong")
	}
	t.Logf("%d relative links checked in %d files", checked, len(files))
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

var linkRE = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// links are the targets of the markdown links outside code blocks and
// code spans.
func links(text string) []string {
	var out []string
	for _, line := range proseLines(text) {
		line = regexp.MustCompile("`[^`]*`").ReplaceAllString(line, "")
		for _, m := range linkRE.FindAllStringSubmatch(line, -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// anchors are GitHub's anchors of the headings outside code blocks.
func anchors(text string) map[string]bool {
	out := map[string]bool{}
	for _, line := range proseLines(text) {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(h) {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		out[b.String()] = true
	}
	return out
}

// proseLines are the lines outside fenced code blocks.
func proseLines(text string) []string {
	var out []string
	fenced := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if !fenced {
			out = append(out, line)
		}
	}
	return out
}
