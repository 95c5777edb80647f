package bundle

import (
	"encoding/json"
	"errors"
	"math/rand"
	"reflect"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/identifiers"
	runcC "github.com/containerd/go-runc"
)

// validateIdentifier must accept and refuse exactly what containerd's
// identifiers.Validate does.
func TestValidateIdentifierMatchesContainerd(t *testing.T) {
	inputs := []string{"", "a", "A9", "a.b", "a..b", "a-", "-a", ".a", "a_b-c.d", "a/b", "..", "a b", "é",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "a\x00", "a_-b"}
	rng := rand.New(rand.NewSource(1))
	alphabet := "aZ09._-/ \x00"
	for i := 0; i < 20000; i++ {
		b := make([]byte, rng.Intn(8))
		for j := range b {
			b[j] = alphabet[rng.Intn(len(alphabet))]
		}
		inputs = append(inputs, string(b))
	}
	for _, in := range inputs {
		ours, theirs := validateIdentifier(in), identifiers.Validate(in)
		if (ours == nil) != (theirs == nil) {
			t.Fatalf("%q: ours %v, containerd's %v", in, ours, theirs)
		}
		if ours != nil && (!errors.Is(ours, ErrInvalid) || !errors.Is(theirs, errdefs.ErrInvalidArgument)) {
			t.Fatalf("%q: errors do not wrap the invalid-argument sentinels: %v / %v", in, ours, theirs)
		}
	}
}

// Options decodes options.json as containerd's generated runc options type
// does, for every field the delete path reads.
func TestOptionsMatchesContainerdType(t *testing.T) {
	want := &options.Options{BinaryName: "crun", Root: "/run/x", SystemdCgroup: true, ShimCgroup: "/s", NoPivotRoot: true, IoUid: 3}
	data, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var got Options
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if got.BinaryName != want.BinaryName || got.Root != want.Root || got.SystemdCgroup != want.SystemdCgroup || got.ShimCgroup != want.ShimCgroup {
		t.Fatalf("decoded %+v from %s", got, data)
	}
}

// Exit decodes exit.json as containerd 2.4's shim writes it: go-runc's
// Exit through encoding/json.
func TestExitMatchesGoRunc(t *testing.T) {
	want := runcC.Exit{Timestamp: time.Date(2026, 11, 30, 1, 2, 3, 4, time.UTC), Pid: 42, Status: 42}
	data, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var got Exit
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(Exit(want), got) {
		t.Fatalf("decoded %+v from %s", got, data)
	}
}
