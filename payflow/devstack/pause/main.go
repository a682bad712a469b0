// The sandbox ("pause") container of the local node: it holds a pod's namespaces open and
// does nothing else. It sleeps until SIGTERM or SIGINT, then exits 0, and reaps any child
// that ends up parented to it (it is PID 1 when the pod shares its PID namespace).
//
// Built by payflow/devstack/images.py: CGO_ENABLED=0 go build, into a `from scratch` image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-children:
			reap()
		}
	}
}

// reap collects every child that has exited, without blocking.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
