package bundle

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// listen makes a real unix socket at p; with keep false it is closed at
// once but its file left behind, as a dead shim leaves it.
func listen(t *testing.T, p string, keep bool) {
	t.Helper()
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatalf("listen %s: %v", p, err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	if !keep {
		l.Close()
		return
	}
	t.Cleanup(func() { l.Close() })
}

// shortDir is a new directory with a short path (a socket's path must fit
// in 108 bytes, and t.TempDir's hold the test's name), removed at the end.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rds")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir); os.RemoveAll(dir + "-link") })
	return dir
}

func TestRemoveDeadSocket(t *testing.T) {
	tests := []struct {
		name        string
		setup       func(t *testing.T, p string) // p is the socket path
		address     func(p string) string        // defaults to "unix://" + p
		wantRemoved bool
		wantErr     string // substring; "" means no error
		wantLeft    bool   // the file must still be there
		socketDir   string // defaults to the directory of p
	}{
		{name: "dead socket", setup: func(t *testing.T, p string) { listen(t, p, false) }, wantRemoved: true},
		{name: "live socket", setup: func(t *testing.T, p string) { listen(t, p, true) },
			wantErr: "live", wantLeft: true},
		{name: "missing", setup: func(*testing.T, string) {}},
		{name: "regular file is not a socket: left", setup: func(t *testing.T, p string) { writeFile(t, p, []byte("x")) },
			wantErr: "not a socket", wantLeft: true},
		{name: "a path with .. that cleans into the socket directory", setup: func(t *testing.T, p string) { listen(t, p, false) },
			address: func(p string) string {
				return "unix://" + filepath.Join(filepath.Dir(p), "sub", "..", "..", filepath.Base(filepath.Dir(p)), filepath.Base(p))
			},
			wantRemoved: true},
		{name: "in another directory: left", setup: func(t *testing.T, p string) { listen(t, p, false) },
			socketDir: "/run/containerd/s", wantErr: "not in the shim socket directory", wantLeft: true},
		{name: "symlink to a live socket is not a socket: left, not followed", setup: func(t *testing.T, p string) {
			live := p + ".live"
			listen(t, live, true)
			if err := os.Symlink(live, p); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if !exists(live) {
					t.Error("the symlink's target was removed")
				}
			})
		}, wantErr: "not a socket", wantLeft: true},
		{name: "directory", setup: func(t *testing.T, p string) { mkdir(t, p) },
			wantErr: "not a socket", wantLeft: true},
		{name: "abstract", setup: func(*testing.T, string) {},
			address: func(string) string { return "unix://@bundletest-abstract" }},
		{name: "not unix", setup: func(*testing.T, string) {},
			address: func(p string) string { return "ttrpc://" + p }, wantErr: "not a unix://"},
		{name: "relative", setup: func(*testing.T, string) {},
			address: func(string) string { return "unix://relative/s" }, wantErr: "not absolute"},
		{name: "empty path", setup: func(*testing.T, string) {},
			address: func(string) string { return "unix://" }, wantErr: "not absolute"},
		{name: "a dead socket not named as containerd names them: left", setup: func(t *testing.T, p string) {
			listen(t, filepath.Join(filepath.Dir(p), "app.sock"), false)
			t.Cleanup(func() {
				if !exists(filepath.Join(filepath.Dir(p), "app.sock")) {
					t.Error("app.sock was removed")
				}
			})
		}, address: func(p string) string { return "unix://" + filepath.Join(filepath.Dir(p), "app.sock") },
			wantErr: "64 hex digits"},
		{name: "socket directory writable by others (/tmp): left", setup: func(t *testing.T, p string) {
			listen(t, p, false)
			if err := os.Chmod(filepath.Dir(p), 0o1777); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "writable by others", wantLeft: true},
		{name: "socket directory of another user: left", setup: func(t *testing.T, p string) {
			listen(t, p, false)
			if err := os.Chown(filepath.Dir(p), 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "owned by uid 65534", wantLeft: true},
		{name: "socket directory through a symbolic link: left", setup: func(t *testing.T, p string) {
			listen(t, p, false)
			if err := os.Symlink(filepath.Dir(p), filepath.Dir(p)+"-link"); err != nil {
				t.Fatal(err)
			}
		}, address: func(p string) string { return "unix://" + filepath.Join(filepath.Dir(p)+"-link", filepath.Base(p)) },
			socketDir: "link", wantErr: "not a directory", wantLeft: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(shortDir(t), strings.Repeat("5e", 32))
			tc.setup(t, p)
			addr := "unix://" + p
			if tc.address != nil {
				addr = tc.address(p)
			}
			dir := tc.socketDir
			switch dir {
			case "":
				dir = filepath.Dir(p)
			case "link":
				dir = filepath.Dir(p) + "-link"
			}
			removed, err := RemoveDeadSocket(addr, dir)
			if removed != tc.wantRemoved {
				t.Errorf("removed = %v, want %v", removed, tc.wantRemoved)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("error %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want one saying %q", err, tc.wantErr)
			}
			if exists(p) != tc.wantLeft {
				t.Errorf("%s exists = %v, want %v", p, exists(p), tc.wantLeft)
			}
		})
	}
}
