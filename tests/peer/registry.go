package main

import (
	"archive/tar"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The tests pull their images (integration/client's TestMain always pulls
// its seed image, CRI tests pull what they miss), and there is no network:
// a registry on 127.0.0.1 serves images made by hand from busybox-static,
// and an image list file (-image-list, containerd's integration/images)
// points every image the tests use at it. containerd and CRI speak plain
// HTTP to a localhost registry without configuration.

const (
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar"
)

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int    `json:"size"`
}

// registry serves manifests by repository and tag (or digest) and blobs by
// digest, read-only.
type registry struct {
	blobs     map[string][]byte            // digest -> content
	manifests map[string]map[string]string // repository -> tag -> digest
	addr      string                       // host:port
	srv       *http.Server
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func (r *registry) put(b []byte) descriptor {
	d := digestOf(b)
	r.blobs[d] = b
	return descriptor{Digest: d, Size: len(b)}
}

// addImage stores an image of one layer under repo:tag and returns the
// manifest's digest.
func (r *registry) addImage(repo, tag string, layer []byte, cfg map[string]any) (string, error) {
	l := r.put(layer)
	l.MediaType = mediaLayer
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       cfg,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{l.Digest}},
		"created":      "1970-01-01T00:00:00Z",
	})
	if err != nil {
		return "", err
	}
	c := r.put(config)
	c.MediaType = mediaConfig
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaManifest,
		"config":        c,
		"layers":        []descriptor{l},
	})
	if err != nil {
		return "", err
	}
	m := r.put(manifest)
	if r.manifests[repo] == nil {
		r.manifests[repo] = map[string]string{}
	}
	r.manifests[repo][tag] = m.Digest
	return m.Digest, nil
}

func (r *registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		http.Error(w, "read-only registry", http.StatusMethodNotAllowed)
		return
	}
	p := req.URL.Path
	if p == "/v2/" || p == "/v2" {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		w.WriteHeader(http.StatusOK)
		return
	}
	serve := func(content []byte, mediaType, digest string) {
		w.Header().Set("Content-Type", mediaType)
		w.Header().Set("Docker-Content-Digest", digest)
		w.Header().Set("Content-Length", strconv.Itoa(len(content)))
		w.WriteHeader(http.StatusOK)
		if req.Method == http.MethodGet {
			_, _ = w.Write(content)
		}
	}
	notFound := func() {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = fmt.Fprint(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}`)
	}
	if i := strings.LastIndex(p, "/manifests/"); strings.HasPrefix(p, "/v2/") && i > 0 {
		repo, ref := p[len("/v2/"):i], p[i+len("/manifests/"):]
		d := ref
		if !strings.HasPrefix(ref, "sha256:") {
			d = r.manifests[repo][ref]
		}
		b, ok := r.blobs[d]
		if !ok {
			notFound()
			return
		}
		serve(b, mediaManifest, d)
		return
	}
	if i := strings.LastIndex(p, "/blobs/"); strings.HasPrefix(p, "/v2/") && i > 0 {
		d := p[i+len("/blobs/"):]
		b, ok := r.blobs[d]
		if !ok {
			notFound()
			return
		}
		serve(b, "application/octet-stream", d)
		return
	}
	notFound()
}

// Image references of the image list; the registry's host:port is put in
// front. The paths are upstream's, so that logs read alike.
type imageRefs struct {
	BusyBox, BusyBoxByDigest, Alpine, Pause string
}

// startRegistry builds the images from busybox (a static binary) and
// pause (tests/peer/pause, static) and serves them on 127.0.0.1 (a free
// port).
func startRegistry(busybox, pauseBin string) (*registry, imageRefs, error) {
	r := &registry{blobs: map[string][]byte{}, manifests: map[string]map[string]string{}}
	layer, err := busyboxLayer(busybox, "")
	if err != nil {
		return nil, imageRefs{}, err
	}
	pauseLayer, err := busyboxLayer(busybox, pauseBin)
	if err != nil {
		return nil, imageRefs{}, err
	}
	const path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	shell := map[string]any{"Env": []string{"PATH=" + path}, "Cmd": []string{"sh"}}
	// pause: runs until SIGTERM or SIGINT (exit 0) or SIGKILL, as k8s' pause.
	pause := map[string]any{"Env": []string{"PATH=" + path}, "Entrypoint": []string{"/pause"}}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, imageRefs{}, err
	}
	r.addr = "localhost:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	bbDigest, err := r.addImage("containerd/busybox", "1.36", layer, shell)
	if err != nil {
		ln.Close()
		return nil, imageRefs{}, err
	}
	if _, err := r.addImage("containerd/alpine", "3.14.0", layer, shell); err != nil {
		ln.Close()
		return nil, imageRefs{}, err
	}
	// pause: the tag of the image list, and the default tags of 2.x and 1.7.
	for _, tag := range []string{"3.10", "3.10.2", "3.8"} {
		if _, err := r.addImage("pause", tag, pauseLayer, pause); err != nil {
			ln.Close()
			return nil, imageRefs{}, err
		}
	}
	refs := imageRefs{
		BusyBox:         r.addr + "/containerd/busybox:1.36",
		BusyBoxByDigest: r.addr + "/containerd/busybox@" + bbDigest,
		Alpine:          r.addr + "/containerd/alpine:3.14.0",
		Pause:           r.addr + "/pause:3.10",
	}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	return r, refs, nil
}

func (r *registry) close() {
	if r != nil && r.srv != nil {
		_ = r.srv.Close()
	}
}

// imageList renders containerd's integration image list (TOML): the fields
// every line's ImageList has, plus BusyBoxByDigest on 2.x.
func imageList(refs imageRefs, v2 bool) string {
	s := fmt.Sprintf("BusyBox = %q\nAlpine = %q\nPause = %q\n", refs.BusyBox, refs.Alpine, refs.Pause)
	if v2 {
		s += fmt.Sprintf("BusyBoxByDigest = %q\n", refs.BusyBoxByDigest)
	}
	return s
}

// busyboxLayer is an uncompressed layer: busybox with a link for each of
// its applets in /bin, the files a minimal image has, and pause as /pause
// when given. Root-owned, fixed times.
func busyboxLayer(busybox, pause string) ([]byte, error) {
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return nil, err
	}
	var pauseBin []byte
	if pause != "" {
		if pauseBin, err = os.ReadFile(pause); err != nil {
			return nil, err
		}
	}
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", busybox, err)
	}
	applets := strings.Fields(string(out))
	sort.Strings(applets)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(0, 0)
	hdr := func(h *tar.Header) error {
		h.ModTime, h.Format = mtime, tar.FormatPAX
		return tw.WriteHeader(h)
	}
	for _, d := range []struct {
		name string
		mode int64
	}{{"bin/", 0o755}, {"dev/", 0o755}, {"etc/", 0o755}, {"proc/", 0o555}, {"sys/", 0o555},
		{"tmp/", 0o1777}, {"run/", 0o755}, {"root/", 0o700}, {"home/", 0o755}, {"var/", 0o755},
		{"usr/", 0o755}, {"usr/bin/", 0o755}, {"sbin/", 0o755}} {
		if err := hdr(&tar.Header{Name: d.name, Mode: d.mode, Typeflag: tar.TypeDir}); err != nil {
			return nil, err
		}
	}
	if err := hdr(&tar.Header{Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	for _, a := range applets {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		if err := hdr(&tar.Header{Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, Typeflag: tar.TypeSymlink}); err != nil {
			return nil, err
		}
	}
	if pauseBin != nil {
		if err := hdr(&tar.Header{Name: "pause", Mode: 0o755, Size: int64(len(pauseBin)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(pauseBin); err != nil {
			return nil, err
		}
	}
	files := []struct{ name, content string }{
		{"etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"},
		{"etc/group", "root:x:0:\nnogroup:x:65534:\n"},
	}
	for _, f := range files {
		if err := hdr(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.content)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write([]byte(f.content)); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// proxyHosts are the registries of containerd's default image references,
// which integration/client pulls (its test image is read at package
// initialisation, before -image-list is parsed, so the list cannot move
// it).
var proxyHosts = []string{"ghcr.io", "registry.k8s.io", "docker.io", "registry-1.docker.io"}

// tlsProxy is an HTTPS proxy (HTTPS_PROXY) that answers CONNECT to any of
// proxyHosts with a TLS server of its own — a certificate for them signed
// by a CA made for the run, trusted by the test binary through
// SSL_CERT_FILE — and serves the registry there. Only the test process
// (whose client pulls) is given these variables.
type tlsProxy struct {
	addr   string // 127.0.0.1:port
	caFile string
	outer  *http.Server
	inner  *http.Server
	conns  chan net.Conn
	closed chan struct{}
}

func startProxy(h http.Handler, dir string) (*tlsProxy, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "peer suite CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(48 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: proxyHosts[0]},
		DNSNames:     proxyHosts,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(48 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	p := &tlsProxy{caFile: filepath.Join(dir, "peer-ca.pem"), conns: make(chan net.Conn), closed: make(chan struct{})}
	if err := os.WriteFile(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		return nil, err
	}
	tlsConf := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER, caDER}, PrivateKey: leafKey}},
		MinVersion:   tls.VersionTLS12,
	}
	p.inner = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.inner.Serve(tls.NewListener(chanListener{p}, tlsConf)) }()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.addr = ln.Addr().String()
	p.outer = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.Host)
		if r.Method != http.MethodConnect || !slices.Contains(proxyHosts, host) {
			http.Error(w, "peer proxy: only CONNECT to "+strings.Join(proxyHosts, ", "), http.StatusForbidden)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			http.Error(w, "no hijacking", http.StatusInternalServerError)
			return
		}
		conn, _, err := hj.Hijack()
		if err != nil {
			return
		}
		if _, err := conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
			conn.Close()
			return
		}
		select {
		case p.conns <- conn:
		case <-p.closed:
			conn.Close()
		}
	})}
	go func() { _ = p.outer.Serve(ln) }()
	return p, nil
}

// env is what the test process needs to pull through the proxy.
func (p *tlsProxy) env() []string {
	return []string{"HTTPS_PROXY=http://" + p.addr, "https_proxy=http://" + p.addr, "SSL_CERT_FILE=" + p.caFile}
}

func (p *tlsProxy) close() {
	if p == nil {
		return
	}
	close(p.closed)
	_ = p.outer.Close()
	_ = p.inner.Close()
}

// chanListener hands the proxy's tunnelled connections to the TLS server.
type chanListener struct{ p *tlsProxy }

func (l chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.p.conns:
		return c, nil
	case <-l.p.closed:
		return nil, net.ErrClosed
	}
}
func (l chanListener) Close() error   { return nil }
func (l chanListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
