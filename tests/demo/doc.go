// Command demo shows the robust delete at work, next to upstream's: it starts
// a private containerd (never the machine's own), runs one container with
// each shim, breaks each task the way production does (the bundle's
// `runtime` file removed, a host directory bind-mounted into the rootfs, the
// shim SIGKILLed), lets containerd clean up, and prints what each shim left
// behind and our delete's report. `make demo` runs it.
package main
