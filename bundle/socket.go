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
// Edge cases: an address without the "unix://" prefix, with a relative
// PATH, or whose PATH is not directly in socketDir, is an error and nothing
// is touched: an address file may name anything. An abstract socket
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
