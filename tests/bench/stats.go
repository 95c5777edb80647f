package main

import (
	"math"
	"sort"
	"time"
)

// summary is the median, min and max of a sample, in the sample's unit.
type summary struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// summarize returns the summary of xs; the zero summary when xs is empty.
func summarize(xs []float64) summary {
	if len(xs) == 0 {
		return summary{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return summary{N: len(s), Median: median(s), Min: s[0], Max: s[len(s)-1]}
}

// median of sorted values.
func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// medianOf is the median of unsorted values; 0 when empty.
func medianOf(xs []float64) float64 { return summarize(xs).Median }

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ratio is ours/upstream; 0 (no ratio) when either is missing, so that
// every figure stays valid JSON.
func ratio(ours, upstream float64) float64 {
	if upstream <= 0 || ours <= 0 || math.IsNaN(ours) || math.IsNaN(upstream) {
		return 0
	}
	return ours / upstream
}
