// Package cli is the containerd-shim-runc-v2-robust binary's command line:
// Run routes each invocation (route, its table) to what serves it and turns
// results into output and exit statuses; Main is os.Exit(Run(...)).
//
//   - `delete` (the last argument): the delete path of package deletion,
//     run through ops.RunDelete, as containerd runs it (-address: the
//     DeleteResponse on stdout, the short report on stderr; a shim that
//     answers is left, never refused) or by hand (the task under the state
//     directory, never the working directory; a live or hung shim refused
//     unless -force; text or JSON); a delete whose flags do not parse is
//     ours too (ExitUsage);
//   - `gc`: the sweep of orphaned tasks (package ops), its report and exit
//     status;
//   - `install` / `uninstall`: our runtime in containerd's configuration
//     (package install);
//   - `-v`, `-h`: our version and the delegate's, our usage;
//   - everything else (start, -info, no arguments, the serving shim that
//     start spawns): upstream's runc shim, the delegate, by execve (package
//     delegate), with the arguments unchanged.
//
// Exit statuses come from ops' one table of how a delete ended
// (ops.Result.ExitStatus; ExitOK... are ops'). It never reads a task
// directory, asks a shim whether it is alive, signals a process or removes
// a file itself: deletion, ops and install do (whether a live shim refuses
// a delete by hand is the delete's to decide), and it imports neither
// bundle nor liveness. The task service is always upstream's own,
// unchanged.
package cli
