package mounttable

import (
	"fmt"
	"sync"
	"time"

	"github.com/moby/sys/mountinfo"
)

// Table is one reading of the mount table.
type Table struct {
	infos []*mountinfo.Info
	at    time.Time
}

// Read reads every mount of the calling process's mount namespace.
func Read() (*Table, error) {
	infos, err := mountinfo.GetMounts(nil)
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return &Table{infos: infos, at: time.Now()}, nil
}

// All returns every mount, in mountinfo order (a mount stacked on another
// comes after it). The caller must not modify them.
func (t *Table) All() []*mountinfo.Info { return t.infos }

// Under returns the mounts whose mount point is p or lies below p, in
// mountinfo order. p must be absolute and clean with its symlinks resolved,
// as mountinfo shows mount points.
func (t *Table) Under(p string) []*mountinfo.Info {
	filter := mountinfo.PrefixFilter(p)
	var out []*mountinfo.Info
	for _, m := range t.infos {
		if skip, _ := filter(m); !skip {
			out = append(out, m)
		}
	}
	return out
}

// Age is how long ago the table was read.
func (t *Table) Age() time.Duration { return time.Since(t.at) }

// Shared hands one reading to many callers and reads again when the one it
// holds is older than MaxAge (0: on every Get). It is safe for concurrent
// use; callers that find the reading too old wait for one new reading. A
// nil *Shared reads afresh on every Get.
type Shared struct {
	MaxAge time.Duration

	mu sync.Mutex
	t  *Table
}

// Get returns a reading no older than s.MaxAge.
func (s *Shared) Get() (*Table, error) {
	if s == nil {
		return Read()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.t != nil && s.t.Age() <= s.MaxAge {
		return s.t, nil
	}
	t, err := Read()
	if err != nil {
		return nil, err
	}
	s.t = t
	return t, nil
}
