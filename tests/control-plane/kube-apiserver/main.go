// Command kube-apiserver is a thin wrapper around k8s.io/kubernetes/cmd/kube-apiserver
// so that a real kube-apiserver can be built from the Go module proxy for integration
// tests (k8s.io/kubernetes itself cannot be `go install`ed because its go.mod replaces
// the staging modules with local paths; go.mod here pins them to published versions).
//
// It mirrors k8s.io/kubernetes/cmd/kube-apiserver/apiserver.go. In addition, when the
// environment variable EXIT_ON_STDIN_EOF=1 is set, the process exits as soon as its
// stdin is closed, so a test harness that holds the write end of a pipe cannot leak the
// server when it dies.
package main

import (
	"fmt"
	"io"
	"os"
	_ "time/tzdata" // for timeZone support in CronJob

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // load all the prometheus client-go plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	if os.Getenv("EXIT_ON_STDIN_EOF") == "1" {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			fmt.Fprintln(os.Stderr, "kube-apiserver wrapper: stdin closed, exiting")
			os.Exit(0)
		}()
	}
	command := app.NewAPIServerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
