package deletion

import (
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// ExitStatusKilled is the exit status a delete reports when no exit was
// recorded: 128+SIGKILL, as every upstream runc shim reports it.
const ExitStatusKilled = 137

// Response is the step "respond" of the delete path (see Delete): the
// DeleteResponse containerd reads on the delete command's stdout.
type Response struct {
	Pid        int
	ExitStatus int
	ExitedAt   time.Time
}

// Marshal encodes r as containerd's task API DeleteResponse — v2 (1.6,
// 1.7) and v3 (2.x) are wire-identical: pid = 1 (uint32), exit_status = 2
// (uint32), exited_at = 3 (google.protobuf.Timestamp: seconds = 1, nanos
// = 2). Zero fields are omitted, as proto3 does. It is written with
// protowire rather than through the generated types, which would link the
// protobuf registry and containerd's API packages into every delete; the
// tests decode it with containerd's own types.
func (r Response) Marshal() []byte {
	var b []byte
	if r.Pid > 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(uint32(r.Pid)))
	}
	if r.ExitStatus != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(uint32(r.ExitStatus)))
	}
	if !r.ExitedAt.IsZero() {
		var ts []byte
		if s := r.ExitedAt.Unix(); s != 0 {
			ts = protowire.AppendTag(ts, 1, protowire.VarintType)
			ts = protowire.AppendVarint(ts, uint64(s))
		}
		if n := r.ExitedAt.Nanosecond(); n != 0 {
			ts = protowire.AppendTag(ts, 2, protowire.VarintType)
			ts = protowire.AppendVarint(ts, uint64(int64(n)))
		}
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendBytes(b, ts)
	}
	return b
}
