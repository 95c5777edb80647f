package cri

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/images"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// ImageRef is the reference the test image is imported under; it serves as
// CRI's sandbox image and as every container's image.
const ImageRef = "localhost/cri-e2e/busybox:1"

// ImageEntrypoint keeps the image's default process (the sandbox's "pause")
// running until it is killed.
var ImageEntrypoint = []string{"/bin/sleep", "2147483647"}

// BuildImage makes an OCI image archive (an OCI layout as a tar stream) of
// one uncompressed layer: a busybox root filesystem (harness.BuildRootfs:
// busybox-static plus sh, sleep and other applet links) in a temp dir
// below tmp. The manifest is named ref for containerd's importer.
func BuildImage(tmp, busybox, ref string) ([]byte, error) {
	dir, err := os.MkdirTemp(tmp, "image-rootfs-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := harness.BuildRootfs(dir, busybox); err != nil {
		return nil, err
	}
	layer, err := tarDir(dir)
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	layerDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(layer), Size: int64(len(layer))}
	platform := ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
	config, err := json.Marshal(ocispec.Image{
		Platform: platform,
		Config: ocispec.ImageConfig{
			Entrypoint: ImageEntrypoint,
			Env:        []string{"PATH=/bin"},
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layerDesc.Digest}},
	})
	if err != nil {
		return nil, err
	}
	configDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(config), Size: int64(len(config))}
	manifest, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    configDesc,
		Layers:    []ocispec.Descriptor{layerDesc},
	})
	if err != nil {
		return nil, err
	}
	manifestDesc := ocispec.Descriptor{
		MediaType:   ocispec.MediaTypeImageManifest,
		Digest:      digest.FromBytes(manifest),
		Size:        int64(len(manifest)),
		Platform:    &platform,
		Annotations: map[string]string{images.AnnotationImageName: ref},
	}
	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{manifestDesc},
	})
	if err != nil {
		return nil, err
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return nil, err
	}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{ocispec.ImageLayoutFile, layout},
		{"index.json", index},
		{"blobs/sha256/" + layerDesc.Digest.Encoded(), layer},
		{"blobs/sha256/" + configDesc.Digest.Encoded(), config},
		{"blobs/sha256/" + manifestDesc.Digest.Encoded(), manifest},
	} {
		if err := add(f.name, f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// tarDir archives dir (directories, regular files, symlinks) as a layer:
// root-owned, with a fixed modification time.
func tarDir(dir string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(0, 0)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: rel, Mode: int64(info.Mode().Perm()), ModTime: mtime, Format: tar.FormatPAX}
		switch {
		case d.IsDir():
			hdr.Typeflag, hdr.Name = tar.TypeDir, rel+"/"
		case info.Mode()&fs.ModeSymlink != 0:
			hdr.Typeflag = tar.TypeSymlink
			if hdr.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			hdr.Typeflag, hdr.Size = tar.TypeReg, info.Size()
		default:
			return fmt.Errorf("%s: unsupported file type %s", p, info.Mode().Type())
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if _, err := tw.Write(data); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ImportImage imports an OCI archive into the k8s.io namespace through
// containerd's client, unpacks it into the CRI snapshotter, and waits
// (bounded) until CRI's image service reports ref — CRI learns of images
// created behind its back from containerd's events, asynchronously.
func (d *Daemon) ImportImage(ctx context.Context, archive []byte, ref string) error {
	client := d.Client()
	if client == nil {
		return fmt.Errorf("import %s: containerd is not running", ref)
	}
	imgs, err := client.Import(ctx, bytes.NewReader(archive))
	if err != nil {
		return fmt.Errorf("import %s: %w", ref, err)
	}
	found := false
	for _, img := range imgs {
		if img.Name != ref {
			continue
		}
		found = true
		if err := containerd.NewImage(client, img).Unpack(ctx, Snapshotter); err != nil {
			return fmt.Errorf("unpack %s: %w", ref, err)
		}
	}
	if !found {
		return fmt.Errorf("import %s: archive held %v", ref, imgs)
	}
	var lastErr error
	ok := harness.Poll(20*time.Second, 50*time.Millisecond, func() bool {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := d.Images().ImageStatus(cctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil {
			lastErr = err
			return false
		}
		return resp.GetImage() != nil
	})
	if !ok {
		return fmt.Errorf("CRI does not report image %s 20s after its import (last error: %v)", ref, lastErr)
	}
	return nil
}
