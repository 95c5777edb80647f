package install

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestManifests parses contrib/kubernetes and checks the fields the
// installer relies on.
func TestManifests(t *testing.T) {
	docs := map[string][]map[string]any{}
	files, _ := filepath.Glob("../contrib/kubernetes/*.yaml")
	if len(files) != 3 {
		t.Fatalf("contrib/kubernetes: %v, want 3 manifests", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var d map[string]any
			if err := dec.Decode(&d); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if d["apiVersion"] == nil || d["kind"] == nil {
				t.Errorf("%s: a document without apiVersion/kind", f)
			}
			docs[filepath.Base(f)] = append(docs[filepath.Base(f)], d)
		}
	}
	rc := docs["runtimeclass.yaml"][0]
	if rc["kind"] != "RuntimeClass" || rc["handler"] != DefaultHandler {
		t.Errorf("runtimeclass: %v", rc)
	}
	var ds map[string]any
	for _, d := range docs["installer-daemonset.yaml"] {
		if d["kind"] == "DaemonSet" {
			ds = d
		}
	}
	spec, _ := ds["spec"].(map[string]any)
	tmpl, _ := spec["template"].(map[string]any)
	pod, _ := tmpl["spec"].(map[string]any)
	if pod["hostPID"] != true {
		t.Errorf("installer: hostPID %v", pod["hostPID"])
	}
	if k := docs["gc-daemonset.yaml"][0]["kind"]; k != "DaemonSet" {
		t.Errorf("gc: kind %v", k)
	}
}
