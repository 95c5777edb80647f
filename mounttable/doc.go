// Package mounttable owns reading the mount table (/proc/self/mountinfo)
// for the delete path, and sharing one reading where one can be shared.
//
// Reading mountinfo costs the kernel time for every mount in the namespace
// (about a microsecond each on the reference machine), and a node that
// piles up orphaned tasks also piles up their rootfs mounts: a sweep that
// read it several times per delete spent most of its time there,
// quadratically in the number of orphans.
//
// It owns:
//   - Read: one reading of every mount, through moby's mountinfo;
//   - Table.Under: the mounts at or below a path, in mountinfo order;
//   - Shared: one reading handed to many deletes (one gc sweep), read again
//     once it is older than MaxAge; a nil *Shared reads afresh on every Get,
//     which is what a single delete does.
//
// A reading is out of date as soon as it is taken: what it lists is where
// to look, never proof that nothing else is mounted. The callers that act
// on it confirm each mount point on the live system (package bundle:
// openat2 RESOLVE_NO_XDEV and st_dev at every step of a removal, and a
// fresh reading where openat2 is unavailable).
//
// It never mounts, unmounts or removes anything.
package mounttable
