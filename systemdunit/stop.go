package systemdunit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// DefaultStopTimeout bounds Stop when its caller gives no timeout: the
// connection, the stop job and the check afterwards together. The delete
// path has 4 s in all; a scope whose processes are already dead stops in
// milliseconds.
const DefaultStopTimeout = 1500 * time.Millisecond

// RunDir is the directory whose presence says systemd is the init of this
// mount namespace (sd_booted(3)). A variable for the tests.
var RunDir = "/run/systemd/system"

// Result is what Stop did to one unit and could not do. Did and Problems
// are report lines; Problems never hold "systemd not reachable" (that is
// Unchecked).
type Result struct {
	Unit string
	// Unchecked says why systemd could not be asked about the unit (no
	// systemd, no bus); "" when it was asked.
	Unchecked string
	// NotLoaded is set when systemd did not have the unit loaded: nothing
	// to do (runc's own delete, or systemd, already removed it).
	NotLoaded bool
	// Refused says why the unit was left alone although loaded: it is not
	// in the slice the evidence names, or not a scope.
	Refused string
	// Stopped is set when a stop job ran for the unit.
	Stopped bool
	// Gone is set when systemd said, at the end, that the unit is not
	// loaded or inactive.
	Gone bool
	// Did is the work done; Problems what could not be done (the unit may
	// be left loaded: the next container with its cgroupsPath would then
	// fail or start outside its scope).
	Did      []string
	Problems []string
}

func (r *Result) did(format string, args ...any) { r.Did = append(r.Did, fmt.Sprintf(format, args...)) }
func (r *Result) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// Stop stops the container's scope unit u through systemd's D-Bus API, as
// runc's systemd driver does when it destroys a container (StopUnit with
// mode "replace", wait for the job, ResetFailedUnit), but only after
// checking that the unit is u: a .scope whose Slice property is u.Slice.
// A unit in another slice is left alone and named in Result.Refused.
//
// The whole of it is bounded by timeout (DefaultStopTimeout when <= 0) and
// by ctx; the bound is named in the result when it is hit. A unit that is
// not loaded (LoadState not-found) is nothing to do. A unit that is loaded
// and inactive is left to systemd's own garbage collection (a failed one is
// reset first). At the end the unit must be not-found or inactive, else
// that is a problem.
//
// When systemd is not running (RunDir is missing) or no bus can be
// connected (the system bus, else systemd's private socket), Result.Unchecked
// says why and nothing is done: the caller's cgroupfs removal is then all
// there is.
func Stop(ctx context.Context, u Unit, timeout time.Duration) Result {
	res := Result{Unit: u.Name}
	if !strings.HasSuffix(u.Name, ".scope") || u.Slice == "" {
		res.Refused = fmt.Sprintf("unit %q in slice %q is not a container scope: not stopped", u.Name, u.Slice)
		return res
	}
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	conn, why := dial(ctx)
	if conn == nil {
		res.Unchecked = fmt.Sprintf("systemd unit %s could not be checked: %s", u.Name, why)
		return res
	}
	defer conn.Close()

	st, err := state(ctx, conn, u.Name)
	if err != nil {
		res.problem("systemd unit %s: %v", u.Name, bounded(ctx, err, timeout))
		return res
	}
	if st.load == "not-found" || st.load == "" {
		res.Gone, res.NotLoaded = true, true
		return res
	}
	slice, err := conn.GetUnitTypePropertyContext(ctx, u.Name, "Scope", "Slice")
	if err != nil {
		res.problem("systemd unit %s: read its slice: %v: not stopped", u.Name, bounded(ctx, err, timeout))
		return res
	}
	if got, _ := slice.Value.Value().(string); got != u.Slice {
		res.Refused = fmt.Sprintf("systemd unit %s is in slice %q, not %q: not the container's, not stopped", u.Name, got, u.Slice)
		return res
	}

	switch st.active {
	case "inactive":
		// Not running: systemd collects it; nothing to stop.
	case "failed":
		if err := conn.ResetFailedUnitContext(ctx, u.Name); err != nil && !isNoSuchUnit(err) {
			res.problem("systemd unit %s: reset-failed: %v", u.Name, bounded(ctx, err, timeout))
		} else {
			res.did("reset failed systemd unit %s", u.Name)
		}
	default: // active, activating, deactivating, reloading
		ch := make(chan string, 1)
		if _, err := conn.StopUnitContext(ctx, u.Name, "replace", ch); err != nil {
			if !isNoSuchUnit(err) {
				res.problem("systemd unit %s (%s): stop: %v", u.Name, st.active, bounded(ctx, err, timeout))
				return res
			}
			break
		}
		res.Stopped = true
		var job string
		select {
		case job = <-ch:
		case <-ctx.Done():
			res.problem("systemd unit %s (was %s): stop job not finished within %s", u.Name, st.active, timeout)
			return res
		}
		// A job other than "done" (canceled by another stop, say) is
		// judged by the unit's state below.
		after, err := state(ctx, conn, u.Name)
		switch {
		case err != nil:
		case after.active == "failed":
			// A unit that failed while stopping stays until reset, as
			// runc does.
			if err := conn.ResetFailedUnitContext(ctx, u.Name); err != nil && !isNoSuchUnit(err) {
				res.problem("systemd unit %s: reset-failed after stop: %v", u.Name, bounded(ctx, err, timeout))
			} else {
				res.did("stopped systemd unit %s (was %s; stop job %s; reset failed)", u.Name, st.active, job)
			}
		case job == "done":
			res.did("stopped systemd unit %s (was %s)", u.Name, st.active)
		default:
			res.did("stopped systemd unit %s (was %s; stop job %s)", u.Name, st.active, job)
		}
	}

	// Confirm: not loaded, or inactive (systemd unloads it next).
	for {
		st, err = state(ctx, conn, u.Name)
		if err != nil {
			res.problem("systemd unit %s: check after stop: %v", u.Name, bounded(ctx, err, timeout))
			return res
		}
		if st.load == "not-found" || st.active == "inactive" {
			res.Gone = true
			return res
		}
		select {
		case <-ctx.Done():
			res.problem("systemd unit %s still %s/%s after %s", u.Name, st.load, st.active, timeout)
			return res
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// unitState is a unit's LoadState and ActiveState.
type unitState struct{ load, active string }

func state(ctx context.Context, conn *sd.Conn, name string) (unitState, error) {
	props, err := conn.GetUnitPropertiesContext(ctx, name)
	if err != nil {
		if isNoSuchUnit(err) {
			return unitState{load: "not-found", active: "inactive"}, nil
		}
		return unitState{}, fmt.Errorf("read its state: %w", err)
	}
	load, _ := props["LoadState"].(string)
	active, _ := props["ActiveState"].(string)
	return unitState{load: load, active: active}, nil
}

// dial connects to systemd within ctx. When systemd is not running (RunDir
// is missing) or no bus can be connected, conn is nil and why says which,
// to follow "could not be checked: ".
func dial(ctx context.Context) (conn *sd.Conn, why string) {
	if _, err := os.Stat(RunDir); err != nil {
		return nil, fmt.Sprintf("systemd is not running (%s: %v)", RunDir, errors.Unwrap(err))
	}
	conn, err := connect(ctx)
	if err != nil {
		return nil, fmt.Sprintf("no D-Bus connection to systemd: %v", err)
	}
	return conn, ""
}

// connect connects to systemd as runc does (the system bus, else, as
// root, systemd's private socket), within ctx: godbus's authentication
// does not watch the context, so a bus that accepts and never answers is
// abandoned at the deadline.
func connect(ctx context.Context) (*sd.Conn, error) {
	type result struct {
		c   *sd.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := sd.NewWithContext(ctx)
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

func isNoSuchUnit(err error) bool {
	var derr godbus.Error
	return errors.As(err, &derr) && strings.Contains(derr.Name, "org.freedesktop.systemd1.NoSuchUnit")
}

// bounded names the bound when err is the context's deadline.
func bounded(ctx context.Context, err error, timeout time.Duration) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (bound %s)", err, timeout)
	}
	return err
}
