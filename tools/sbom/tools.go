//go:build tools

// Package sbom pins the SBOM generator `make release` runs
// (go run github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod), a
// module of its own so that it stays out of the shim's module graph.
package sbom

import _ "github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod"
