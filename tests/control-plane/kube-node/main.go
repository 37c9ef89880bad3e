// Command kube-node is one multi-call binary for the node suite (tests/node/): kubelet,
// kube-controller-manager, kube-scheduler and kubectl from k8s.io/kubernetes, chosen by the
// name it is called by (build.sh makes a symlink per name) or by its first argument. One
// binary links once instead of four times and shares the packages the four have in common
// (the old hyperkube did the same).
//
// Each branch mirrors k8s.io/kubernetes/cmd/<name>/<name>.go. EXIT_ON_STDIN_EOF=1 makes the
// server commands exit when stdin closes, as in the kube-apiserver wrapper, so a harness that
// dies cannot leak them.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	_ "time/tzdata" // for CronJob time zones (kube-controller-manager)

	_ "k8s.io/client-go/plugin/pkg/client/auth" // kubectl's client auth plugins
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

const names = "kubelet, kube-controller-manager, kube-scheduler or kubectl"

func main() {
	name := filepath.Base(os.Args[0])
	if name == "kube-node" {
		if len(os.Args) < 2 {
			fmt.Fprintf(os.Stderr, "usage: kube-node %s [flags]\n", names)
			os.Exit(2)
		}
		name = os.Args[1]
		os.Args = os.Args[1:]
	}
	if name != "kubectl" && os.Getenv("EXIT_ON_STDIN_EOF") == "1" {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			fmt.Fprintf(os.Stderr, "%s wrapper: stdin closed, exiting\n", name)
			os.Exit(0)
		}()
	}
	switch name {
	case "kubelet":
		os.Exit(cli.Run(kubelet.NewKubeletCommand(context.Background())))
	case "kube-controller-manager":
		os.Exit(cli.Run(controllermanager.NewControllerManagerCommand()))
	case "kube-scheduler":
		os.Exit(cli.Run(scheduler.NewSchedulerCommand()))
	case "kubectl":
		logs.GlogSetter(kubectl.GetLogVerbosity(os.Args)) // nolint:errcheck
		if err := cli.RunNoErrOutput(kubectl.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
	default:
		fmt.Fprintf(os.Stderr, "kube-node: unknown command %q (want %s)\n", name, names)
		os.Exit(2)
	}
}
