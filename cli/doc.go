// Package cli is the containerd-shim-runc-v2-robust binary's command line:
// it routes each invocation (Main) to what serves it and turns results into
// output and exit statuses.
//
//   - `delete` (the last argument): the delete path of package deletion, as
//     containerd runs it (-address: the DeleteResponse on stdout, the short
//     report on stderr; a shim that answers is left, never refused) or by
//     hand (the task under the state directory, never the working
//     directory; a live or hung shim refused unless -force; text or JSON);
//   - `gc`: the sweep of orphaned tasks (package ops), its report and exit
//     status;
//   - `install` / `uninstall`: our runtime in containerd's configuration
//     (package install);
//   - `-v`, `-h`: our version and the delegate's, our usage;
//   - everything else (start, -info, the serving shim that start spawns):
//     upstream's runc shim, the delegate, by execve (package delegate).
//
// It reads a task directory and probes its shim only to refuse a delete by
// hand of a live task before it starts (probeTask; the delete asks the
// shim again under the task directory's lock). It never signals a process
// or removes a file itself: deletion, ops and install do, and the task
// service is always upstream's own, unchanged.
package cli
