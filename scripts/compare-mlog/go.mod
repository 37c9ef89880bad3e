// A stand-in for monis.app/mlog, which the Go module proxy refuses (403): just the part of its API
// that Azure Workload Identity's webhook calls, on klog's logr. scripts/compare.sh says why.
module monis.app/mlog

go 1.22

require (
	github.com/go-logr/logr v1.4.2
	k8s.io/klog/v2 v2.130.1
)
