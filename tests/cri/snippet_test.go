package cri

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestREADMESnippet keeps the project's README the configuration the suite
// runs: each set-up's handler, rendered by the same function the daemons'
// configurations are (with the README's install path), and the
// RuntimeClass manifest must appear there as fenced blocks, byte for byte.
func TestREADMESnippet(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := fencedBlocks(string(data))
	want := map[string]string{
		"yaml, RuntimeClass": RuntimeClassManifest(HandlerRobust),
	}
	for _, v := range []ConfigVersion{ConfigV2, ConfigV3} {
		for _, s := range []Setup{SetupRuntimeType, SetupRuntimePath} {
			want[fmt.Sprintf("toml, config version %d, %s", v, s)] = fmt.Sprintf("version = %d\n", v) + HandlerConfig(v, s, HandlerRobust, InstallPath)
		}
	}
	for name, w := range want {
		lang := strings.SplitN(name, ",", 2)[0]
		found := false
		for _, b := range blocks[lang] {
			found = found || b == w
		}
		if !found {
			t.Errorf("README.md has no ```%s block for the %s set-up; the suite uses:\n%s", lang, name, w)
		}
	}
}

// fencedBlocks returns the bodies of the ``` blocks of a Markdown text by
// their language tag.
func fencedBlocks(md string) map[string][]string {
	out := map[string][]string{}
	var lang string
	var body []string
	in := false
	for _, line := range strings.Split(md, "\n") {
		switch {
		case !in && strings.HasPrefix(line, "```"):
			in, lang, body = true, strings.TrimPrefix(line, "```"), nil
		case in && line == "```":
			in = false
			out[lang] = append(out[lang], strings.Join(body, "\n")+"\n")
		case in:
			body = append(body, line)
		}
	}
	return out
}

func TestSetupFor(t *testing.T) {
	for _, tc := range []struct {
		version string
		want    Setup
	}{
		{"1.6.20~ds1", SetupRuntimeType},
		{"1.6.0", SetupRuntimeType},
		{"1.6.21", SetupRuntimePath},
		{"1.7.0", SetupRuntimeType},
		{"1.7.1", SetupRuntimePath},
		{"1.7.35+unknown", SetupRuntimePath},
		{"v2.0.0", SetupRuntimePath},
		{"v2.3.7", SetupRuntimePath},
		{"v2.4.2", SetupRuntimePath},
		{"1.5.18", SetupRuntimeType},
	} {
		t.Run(tc.version, func(t *testing.T) {
			got, err := SetupFor(tc.version)
			if err != nil || got != tc.want {
				t.Errorf("SetupFor(%q) = %v, %v; want %v", tc.version, got, err, tc.want)
			}
		})
	}
	if _, err := SetupFor("unknown"); err == nil {
		t.Error(`SetupFor("unknown"): no error`)
	}
}

func TestConfigVersionFor(t *testing.T) {
	for version, want := range map[string]ConfigVersion{
		"1.6.20~ds1": ConfigV2, "v1.7.35": ConfigV2, "v2.3.7": ConfigV3, "v2.4.2": ConfigV3,
	} {
		if got, err := ConfigVersionFor(version); err != nil || got != want {
			t.Errorf("ConfigVersionFor(%q) = %v, %v; want %v", version, got, err, want)
		}
	}
}

func TestContainerRunsNoDelete(t *testing.T) {
	for version, want := range map[string]bool{
		"1.6.20~ds1": false, "v1.7.35": false, "v2.0.0": true, "v2.3.7": true, "v2.4.2": false, "v2.5.0": false,
	} {
		if got := containerRunsNoDelete(version); got != want {
			t.Errorf("containerRunsNoDelete(%q) = %v, want %v", version, got, want)
		}
	}
}
