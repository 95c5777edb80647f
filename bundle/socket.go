package bundle

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// unixScheme prefixes a unix socket address in `address`.
const unixScheme = "unix://"

// dialTimeout bounds the liveness probe of a shim socket. Connecting to a
// unix socket never waits on the network: it is accepted into the backlog
// or refused at once, so this only guards against a wedged kernel path.
const dialTimeout = 500 * time.Millisecond

// RemoveDeadSocket removes the unix socket of address ("unix://PATH") when
// it lies directly in socketDir (the shim socket directory: containerd 2.x's
// `s` link, else DefaultSocketDir) and nothing accepts connections on it. It
// reports whether it removed it. A missing socket is success; a live one is
// left and reported with an error.
//
// Only what containerd makes is removed: PATH's base name must be 64 hex
// digits (containerd names a shim socket by the sha256 of its address,
// namespace and id: pkg/shim SocketAddress), and socketDir must be
// DefaultSocketDir or a directory only its owner can write, the owner
// being root or this process's user (containerd 2.3+'s configured
// socket_dir, which the shim records in the `s` link): an `s` link may
// name anything, but only the socket directory's owner can have put a
// socket in such a directory.
//
// Edge cases: an address without the "unix://" prefix, with a relative
// PATH, or whose PATH is not directly in socketDir, is an error and nothing
// is touched: an address file may name anything. So is a socketDir that is
// a symbolic link, not a directory, owned by another user or writable by
// its group or others (/tmp), unless it is DefaultSocketDir. An abstract socket
// ("unix://@name" or a leading NUL) is not a file: (false, nil). A
// connection refused (ECONNREFUSED, including a socket file nobody listens
// on) or a socket of another type (EPROTOTYPE) is dead and removed.
// Anything at PATH that is not a socket (a symlink, a regular file, a
// directory) is not a shim's socket: left, and an error says so. Any other
// dial failure (timeout, EAGAIN on a full backlog, EACCES) is not proof of
// death: the file is left and the error returned.
func RemoveDeadSocket(address, socketDir string) (removed bool, err error) {
	if !strings.HasPrefix(address, unixScheme) {
		return false, fmt.Errorf("remove dead socket %q: not a unix:// address", address)
	}
	p := strings.TrimPrefix(address, unixScheme)
	if strings.HasPrefix(p, "@") || strings.HasPrefix(p, "\x00") {
		return false, nil
	}
	if p == "" || !filepath.IsAbs(p) {
		return false, fmt.Errorf("remove dead socket %q: socket path is not absolute", address)
	}
	p = filepath.Clean(p)
	if socketDir == "" || filepath.Dir(p) != filepath.Clean(socketDir) {
		return false, fmt.Errorf("remove dead socket %s: not in the shim socket directory %s, left in place", p, socketDir)
	}
	if !IsShimSocketName(filepath.Base(p)) {
		return false, fmt.Errorf("remove dead socket %s: not named as containerd names shim sockets (64 hex digits), left in place", p)
	}
	if err := checkSocketDir(filepath.Clean(socketDir)); err != nil {
		return false, fmt.Errorf("remove dead socket %s: %w, left in place", p, err)
	}
	st, err := os.Lstat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("remove dead socket %s: %w", p, err)
	}
	if st.Mode().Type() != fs.ModeSocket {
		return false, fmt.Errorf("remove dead socket %s: not a socket (%s), left in place", p, st.Mode().Type())
	}
	switch state, err := ProbeSocket(p, dialTimeout); state {
	case SocketLive:
		return false, fmt.Errorf("remove dead socket %s: socket is live (accepts connections), left in place", p)
	case SocketMissing:
		return false, nil
	case SocketUnknown:
		return false, fmt.Errorf("remove dead socket %s: cannot tell whether it is live: %w", p, err)
	}
	// SocketDead. unlink, not os.Remove: never rmdir what may have become
	// a directory.
	if err := unix.Unlink(p); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("remove dead socket %s: %w", p, err)
	}
	return true, nil
}

// SocketState is what connecting to a unix socket tells of its listener.
type SocketState int

const (
	// SocketMissing: nothing at the path.
	SocketMissing SocketState = iota
	// SocketDead: the connection was refused (ECONNREFUSED: nothing
	// listens), or the path is a socket of another type (EPROTOTYPE) or
	// no socket at all (ENOTSOCK).
	SocketDead
	// SocketLive: a connection was accepted.
	SocketLive
	// SocketUnknown: anything else (a timeout, EAGAIN on a full backlog,
	// EACCES): a listener cannot be ruled out.
	SocketUnknown
)

// ProbeSocket connects to the unix socket at path ("@name" for an abstract
// one), within timeout, and closes the connection at once. The error is the
// dial's, for SocketUnknown.
func ProbeSocket(path string, timeout time.Duration) (SocketState, error) {
	conn, err := net.DialTimeout("unix", path, timeout)
	switch {
	case err == nil:
		conn.Close()
		return SocketLive, nil
	case errors.Is(err, fs.ErrNotExist):
		return SocketMissing, nil
	case errors.Is(err, unix.ECONNREFUSED), errors.Is(err, unix.EPROTOTYPE), errors.Is(err, unix.ENOTSOCK):
		return SocketDead, nil
	}
	return SocketUnknown, err
}

// IsShimSocketName reports whether name is how containerd names a shim's
// socket: the sha256 of its address, namespace and id in 64 lowercase hex
// digits (pkg/shim SocketAddress; the debug socket alike).
func IsShimSocketName(name string) bool {
	if len(name) != 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// checkSocketDir accepts DefaultSocketDir, and any other directory (not a
// symbolic link) owned by root or by this process's user and writable by
// no one else.
func checkSocketDir(dir string) error {
	if dir == DefaultSocketDir {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("socket directory %s: %w", dir, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("socket directory %s is not a directory (a link, or a file)", dir)
	case st.Uid != 0 && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("socket directory %s is owned by uid %d, not by root", dir, st.Uid)
	case st.Mode&0o022 != 0:
		return fmt.Errorf("socket directory %s is writable by others (mode %#o)", dir, st.Mode&0o7777)
	}
	return nil
}
