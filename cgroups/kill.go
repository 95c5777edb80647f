package cgroups

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// v2KillFile is cgroup2's kill file (Linux 5.14+); a variable so that tests
// can force the freeze fallback.
var v2KillFile = "cgroup.kill"

const (
	// freezeWait bounds waiting for a freeze; past it the round goes on
	// unfrozen (membership is still checked through /proc for every pid).
	freezeWait = 100 * time.Millisecond
	// roundWait bounds waiting on pidfds before the cgroups are read again.
	roundWait = 50 * time.Millisecond
	// maxBackoff caps the sleep between rounds when there is nothing to
	// poll.
	maxBackoff = 16 * time.Millisecond
)

// proc is a process found in the set, proven a member, held by a pidfd.
type proc struct {
	fd        int
	cgroups   map[string]string // from /proc/<pid>/cgroup when proven
	signalled bool
	exited    bool
}

// killer is one Kill call.
type killer struct {
	dirs      []dirInfo
	procs     map[int]*proc
	signalled int
	errs      []error
	errSeen   map[string]bool
}

func (k *killer) fail(err error) {
	if err == nil || k.errSeen[err.Error()] {
		return
	}
	k.errSeen[err.Error()] = true
	k.errs = append(k.errs, err)
}

func (k *killer) close() {
	for _, p := range k.procs {
		closeFd(p.fd)
	}
}

// Kill kills every process in the set's directories and their descendant
// cgroups and waits until every directory is empty or ctx is done. Each
// round: freeze (v1 freezer.state; v2 cgroup.freeze where there is no
// cgroup.kill, or it is a threaded cgroup, which refuses cgroup.kill),
// list cgroup.procs of every directory and descendant (a threaded
// cgroup's cgroup.threads, each thread's process once), open a
// pidfd to each pid and prove it a member through /proc/<pid>/cgroup, write
// cgroup.kill (v2), SIGKILL each proven member through its pidfd, thaw
// (always, so a paused container's processes can die), then poll the
// pidfds and read the cgroups again. Rounds repeat with a short backoff.
// Every walk of the cgroup trees stops when ctx is done.
//
// It returns how many distinct processes it signalled: proven members that
// got SIGKILL through their pidfd or, when listed before the write, from
// cgroup.kill (processes forked meanwhile and killed by cgroup.kill alone
// are not counted). Directories that do not exist are
// empty. It never signals the calling process, its parent, or pid 1, nor
// acts on a directory that holds them (see Find). The error names each
// directory that still has processes when ctx ends, and joins any other
// failure; without a ctx deadline Kill may wait forever on an unkillable
// process.
func (s *Set) Kill(ctx context.Context) (signalled int, err error) {
	dirs, errs := s.resolve()
	if len(dirs) == 0 {
		return 0, errors.Join(errs...)
	}
	k := &killer{dirs: dirs, procs: map[int]*proc{}, errSeen: map[string]bool{}}
	defer k.close()
	if k.killV2(ctx) && len(k.busy(ctx)) == 0 {
		return k.signalled, errors.Join(append(errs, k.errs...)...)
	}
	backoff := time.Millisecond
	for {
		k.round(ctx)
		waited := k.wait(ctx)
		busy := k.busy(ctx)
		if len(busy) == 0 {
			return k.signalled, errors.Join(append(errs, k.errs...)...)
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("kill cgroups: processes left (or not ruled out) in %s: %w", strings.Join(busy, ", "), err))
			return k.signalled, errors.Join(append(errs, k.errs...)...)
		}
		if waited {
			backoff = time.Millisecond
			continue
		}
		sleep(ctx, backoff)
		backoff = min(2*backoff, maxBackoff)
	}
}

// killV2 is Kill's first move where cgroup2 has cgroup.kill: the kernel
// kills every member of the cgroup and its descendants at once, with no pid
// to read and no proof to take beyond the cgroup itself. On a hybrid host
// runc puts the container in the unified hierarchy too, so this usually
// empties every hierarchy and the rounds below find nothing to do. It
// counts the members listed just before the write, waits (bounded by
// roundWait and ctx) until the killed cgroups are no longer populated, and
// reports whether it wrote any cgroup.kill.
func (k *killer) killV2(ctx context.Context) bool {
	var killed []dirInfo
	for _, d := range k.dirs {
		if !hasKill(d) || !populated(ctx, d) {
			continue
		}
		n := 0
		_ = walkCgroups(ctx, d.path, func(dir string) {
			pids, _ := readPids(dir)
			n += len(pids)
		})
		if err := writeCgroupFile(d.path, v2KillFile, "1"); err != nil {
			if !gone(err) {
				k.fail(fmt.Errorf("kill cgroup %s: write %s: %w", d.path, v2KillFile, err))
			}
			continue
		}
		k.signalled += n
		killed = append(killed, d)
	}
	if len(killed) == 0 {
		return false
	}
	deadline := time.Now().Add(roundWait)
	delay := 100 * time.Microsecond
	for _, d := range killed {
		for populated(ctx, d) && time.Now().Before(deadline) && ctx.Err() == nil {
			sleep(ctx, delay)
			delay = min(2*delay, time.Millisecond)
		}
	}
	return true
}

// hasKill reports whether d is a cgroup2 directory whose cgroup.kill can
// be written: it has one and is not a threaded cgroup, which the kernel
// refuses it (EOPNOTSUPP). A threaded cgroup is frozen instead
// (cgroup.freeze works there), and its members, found through
// cgroup.threads (readPids), are signalled one by one.
func hasKill(d dirInfo) bool {
	return d.v2 && hasFile(d.path, v2KillFile) && !threaded(d.path)
}

// threaded reports whether cgroup2 directory dir is a threaded cgroup
// (its cgroup.type says "threaded"; a "domain threaded" cgroup, the root of
// a threaded subtree, is not). A cgroup.type that cannot be read says no.
func threaded(dir string) bool {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.type"))
	return err == nil && strings.TrimSpace(string(data)) == "threaded"
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// round freezes, collects and proves members, kills, and thaws.
func (k *killer) round(ctx context.Context) {
	var (
		frozen  []dirInfo // frozen by this round, to thaw
		killV2  []dirInfo // v2 dirs with cgroup.kill
		present []dirInfo
	)
	for _, d := range k.dirs {
		ok, err := onCgroupFS(d.path, d.v2)
		if err != nil {
			k.fail(fmt.Errorf("kill cgroup %s: %w", d.path, err))
			continue
		}
		if !ok {
			continue // removed: released
		}
		present = append(present, d)
		switch {
		case hasKill(d):
			killV2 = append(killV2, d)
		case d.v2 && hasFile(d.path, "cgroup.freeze"):
			if err := writeCgroupFile(d.path, "cgroup.freeze", "1"); err != nil {
				if !gone(err) {
					k.fail(fmt.Errorf("freeze cgroup %s: %w", d.path, err))
				}
				continue
			}
			frozen = append(frozen, d)
		case !d.v2 && hasFile(d.path, "freezer.state"):
			if err := writeCgroupFile(d.path, "freezer.state", "FROZEN"); err != nil {
				if !gone(err) {
					k.fail(fmt.Errorf("freeze cgroup %s: %w", d.path, err))
				}
				continue
			}
			frozen = append(frozen, d)
		}
	}
	defer k.thaw(frozen)
	k.waitFrozen(ctx, frozen)

	for _, d := range present {
		err := walkCgroups(ctx, d.path, func(dir string) {
			pids, err := readPids(dir)
			if err != nil {
				k.fail(fmt.Errorf("list processes of cgroup %s: %w", dir, err))
			}
			for _, pid := range pids {
				k.track(pid)
			}
		})
		if err != nil {
			k.fail(fmt.Errorf("list processes of cgroup %s: %w", d.path, err))
		}
	}

	for _, d := range killV2 {
		if err := writeCgroupFile(d.path, v2KillFile, "1"); err != nil {
			if !gone(err) {
				k.fail(fmt.Errorf("kill cgroup %s: write %s: %w", d.path, v2KillFile, err))
			}
			continue
		}
		// The proven members below d got their SIGKILL from the kernel.
		for _, p := range k.procs {
			if !p.signalled && !p.exited && member(p.cgroups, []dirInfo{d}) {
				p.signalled = true
				k.signalled++
			}
		}
	}

	for pid, p := range k.procs {
		if p.signalled || p.exited {
			continue
		}
		sent, err := pidfdKill(p.fd, pid)
		if err != nil {
			k.fail(fmt.Errorf("kill cgroup member: %w", err))
			continue
		}
		if !sent {
			p.exited = true
			continue
		}
		p.signalled = true
		k.signalled++
	}
}

// track opens a pidfd to a pid listed in a cgroup and keeps it if the
// process is proven a member afterwards.
func (k *killer) track(pid int) {
	if p, ok := k.procs[pid]; ok {
		if !p.exited && !pidfdExited(p.fd) {
			return // known and alive
		}
		// Listed again after it exited: the pid was reused.
		closeFd(p.fd)
		delete(k.procs, pid)
	}
	if what := guardedPid(pid); what != "" {
		k.fail(fmt.Errorf("kill cgroups: refusing to signal pid %d (%s)", pid, what))
		return
	}
	fd, err := pidfdOpen(pid)
	if err != nil {
		if !errors.Is(err, errGone) {
			k.fail(fmt.Errorf("kill cgroup member: %w", err))
		}
		return
	}
	cgs, ok, err := memberCgroups(fd, pid, k.dirs)
	if err != nil || !ok {
		closeFd(fd)
		if err != nil {
			k.fail(fmt.Errorf("kill cgroup member: check pid %d: %w", pid, err))
		}
		return
	}
	k.procs[pid] = &proc{fd: fd, cgroups: cgs}
}

// thaw undoes this round's freezes.
func (k *killer) thaw(frozen []dirInfo) {
	for _, d := range frozen {
		var err error
		if d.v2 {
			err = writeCgroupFile(d.path, "cgroup.freeze", "0")
		} else {
			err = writeCgroupFile(d.path, "freezer.state", "THAWED")
		}
		if err != nil && !gone(err) {
			k.fail(fmt.Errorf("thaw cgroup %s: %w", d.path, err))
		}
	}
}

// waitFrozen waits, bounded by freezeWait and ctx, until every dir reports
// frozen. A freeze that does not finish is not an error: membership is
// still proven per process.
func (k *killer) waitFrozen(ctx context.Context, dirs []dirInfo) {
	deadline := time.Now().Add(freezeWait)
	delay := 200 * time.Microsecond
	for _, d := range dirs {
		for !isFrozen(d) {
			if time.Now().After(deadline) || ctx.Err() != nil {
				return
			}
			sleep(ctx, delay)
			delay = min(2*delay, 5*time.Millisecond)
		}
	}
}

func isFrozen(d dirInfo) bool {
	if d.v2 {
		v, err := eventsField(d.path, "frozen")
		return err != nil || v == "1" // unreadable: do not wait on it
	}
	data, err := os.ReadFile(filepath.Join(d.path, "freezer.state"))
	if err != nil {
		return true
	}
	state := strings.TrimSpace(string(data))
	if state == "THAWED" { // thawed meanwhile by someone else: freeze again
		_ = writeCgroupFile(d.path, "freezer.state", "FROZEN")
	}
	return state == "FROZEN"
}

// eventsField reads one key of a cgroup2 cgroup.events file.
func eventsField(dir, key string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			return v, nil
		}
	}
	return "", fmt.Errorf("%s: no %q in cgroup.events", dir, key)
}

// wait polls the pidfds of signalled processes that have not exited yet,
// bounded by roundWait and ctx. It reports whether there was any to wait
// on.
func (k *killer) wait(ctx context.Context) bool {
	var (
		fds  []int
		live []*proc
	)
	for _, p := range k.procs {
		if p.signalled && !p.exited {
			fds = append(fds, p.fd)
			live = append(live, p)
		}
	}
	if len(fds) == 0 {
		return false
	}
	for i, ex := range waitPidfds(ctx, fds, roundWait) {
		if ex {
			live[i].exited = true
		}
	}
	return true
}

// busy returns the directories that still hold processes (v2: "populated"
// of cgroup.events, which covers descendants; v1: cgroup.procs of the
// directory and every descendant, as far as ctx lets the walk go).
func (k *killer) busy(ctx context.Context) []string {
	var out []string
	for _, d := range k.dirs {
		if populated(ctx, d) {
			out = append(out, d.path)
		}
	}
	sort.Strings(out)
	return out
}

// populated reports whether d or a descendant holds a process. A v1 walk
// that ctx cut short counts as populated: nothing rules it out.
func populated(ctx context.Context, d dirInfo) bool {
	if d.v2 {
		v, err := eventsField(d.path, "populated")
		if err == nil {
			return v != "0"
		}
		if gone(err) {
			return false
		}
	}
	found := false
	err := walkCgroups(ctx, d.path, func(dir string) {
		if found {
			return
		}
		pids, err := readPids(dir)
		found = err != nil || len(pids) > 0
	})
	return found || (err != nil && ctx.Err() != nil)
}
