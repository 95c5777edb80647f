// Package promtest reads Prometheus textfile-collector files in tests, with
// Prometheus's own parser, and looks samples up in them: what the product's
// metrics are checked against. Imported by tests only; it never writes a
// metrics file.
package promtest

import (
	"os"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// Families is a parsed metrics file, by family name.
type Families map[string]*dto.MetricFamily

// Parse parses the textfile at path, failing the test when it cannot be
// read or is not Prometheus text format.
func Parse(t testing.TB, path string) Families {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("metrics file: %v", err)
	}
	defer f.Close()
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("metrics file %s does not parse as Prometheus text format: %v", path, err)
	}
	return fams
}

// Value is the value of the sample of family name whose labels include
// every pair in labels (name, value, name, value...; a histogram's value is
// its sample count); ok is false when there is none.
func (fams Families) Value(name string, labels ...string) (float64, bool) {
	fam, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range fam.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}
