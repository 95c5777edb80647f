package harness

import (
	"context"
	"testing"
	"time"
)

// KeepServing makes sure d serves again when the test ends, however it
// ends. Registered after the test's containers, it runs before their
// cleanups (t.Cleanup is last-in, first-out), which use the daemon.
func (d *Daemon) KeepServing(t testing.TB) {
	t.Helper()
	t.Cleanup(func() {
		if d.Running() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), StartTimeout+10*time.Second)
		defer cancel()
		if err := d.Start(ctx); err != nil {
			t.Errorf("bring the daemon back: %v", err)
		}
	})
}
