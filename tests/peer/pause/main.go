// Command pause is the peer suite's sandbox ("pause") image's process, as
// Kubernetes' pause: it waits until SIGTERM or SIGINT and exits 0. Built
// static by the suite; a signal that comes before main is ready still ends
// it (Go's runtime handles every signal from its start), so that tests that
// kill the sandbox right after RunPodSandbox see it exit at once (a shell's
// trap, installed later, loses that race: PID 1 of a namespace ignores
// signals it has no handler for).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
	os.Exit(0)
}
