package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRender: two e2e runs become one table with a column of upstream's
// cells per line and ours merged when equal; a line no run covered is
// named at the top; each run's command and commit are in the header.
func TestRender(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("e2e-2.4.2.jsonl", `{"kind":"run","suite":"e2e","containerd":"2.4.2","commit":"bbb","command":"E2E_CONTAINERD=x go test ./tests/e2e/","finished":"2026-01-01T00:00:00Z"}
{"kind":"row","case":"shim SIGKILL","shim":"upstream","outcome":"shim socket"}
{"kind":"row","case":"shim SIGKILL","shim":"ours","outcome":"clean"}
{"kind":"row","case":"exit status","shim":"ours","outcome":"clean, status 42"}
`)
	write("e2e-1.6.20_ds1.jsonl", `{"kind":"run","suite":"e2e","containerd":"1.6.20~ds1","commit":"aaa-dirty","command":"E2E_CONTAINERD=y go test ./tests/e2e/","finished":"2026-01-01T00:00:00Z","failed":true}
{"kind":"row","case":"shim SIGKILL","shim":"upstream","outcome":"a | b"}
{"kind":"row","case":"shim SIGKILL","shim":"ours","outcome":"clean"}
{"kind":"row","case":"exit status","shim":"ours","outcome":"clean, status 137"}
`)
	runs, err := load(dir)
	if err != nil {
		t.Fatal(err)
	}
	doc := render(runs, []string{"1.6", "1.7", "2.3", "2.4"}, "make results", "ccc")
	for _, want := range []string{
		"`make results` at commit `ccc`",
		"not run: 1.7, 2.3.",
		"| e2e | 1.6.20~ds1 | `E2E_CONTAINERD=y go test ./tests/e2e/` | `aaa-dirty` | 2026-01-01T00:00:00Z | **failed** |",
		"| case | upstream's shim of 1.6.20~ds1 | upstream's shim of 2.4.2 | ours (1.6.20~ds1, 2.4.2) |",
		`| shim SIGKILL | a \| b | shim socket | clean |`,
		"| exit status | not run | not run | 1.6.20~ds1: clean, status 137; 2.4.2: clean, status 42 |",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("document lacks %q:\n%s", want, doc)
		}
	}
}

// TestLoadRefuses: a file without its run line first, or with an unknown
// kind, is an error, never silently skipped; so is an empty directory.
func TestLoadRefuses(t *testing.T) {
	for name, text := range map[string]string{
		"no run line":  `{"kind":"row","case":"c","shim":"ours","outcome":"clean"}` + "\n",
		"unknown kind": `{"kind":"run","suite":"e2e","containerd":"2.4.2"}` + "\n" + `{"kind":"cell"}` + "\n",
		"not JSON":     "| case | ours |\n",
		"empty dir":    "",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if text != "" {
				if err := os.WriteFile(filepath.Join(dir, "e2e-x.jsonl"), []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := load(dir); err == nil {
				t.Error("load: no error")
			}
		})
	}
}
