// Command etcd is a minimal single-member etcd server for integration tests, built
// on go.etcd.io/etcd/server/v3/embed so that it can be compiled from the Go module
// proxy (no release tarball needed).
//
// Flags:
//
//	--data-dir               directory for the member data (required)
//	--listen-client-urls     e.g. http://127.0.0.1:2379
//	--advertise-client-urls  defaults to --listen-client-urls
//	--listen-peer-urls       e.g. http://127.0.0.1:2380
//	--log-level              zap log level (default warn)
//	--unsafe-no-fsync        disable fsync (default true: this is a throw-away test server)
//
// It prints "etcd ready: <client urls>" on stdout once the server is ready to serve
// clients and stops gracefully on SIGTERM/SIGINT. When the environment variable
// EXIT_ON_STDIN_EOF=1 is set it also stops as soon as stdin is closed, so a test
// harness that holds the write end of a pipe cannot leak the server when it dies.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func parseURLs(name, value string) []url.URL {
	var out []url.URL
	for _, s := range strings.Split(value, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		u, err := url.Parse(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "etcd: invalid --%s %q: %v\n", name, s, err)
			os.Exit(2)
		}
		out = append(out, *u)
	}
	if len(out) == 0 {
		fmt.Fprintf(os.Stderr, "etcd: --%s must not be empty\n", name)
		os.Exit(2)
	}
	return out
}

func main() {
	dataDir := flag.String("data-dir", "", "directory for the member data (required)")
	name := flag.String("name", "test", "member name")
	listenClient := flag.String("listen-client-urls", "http://127.0.0.1:2379", "comma-separated client URLs to listen on")
	advertiseClient := flag.String("advertise-client-urls", "", "comma-separated client URLs to advertise (default: --listen-client-urls)")
	listenPeer := flag.String("listen-peer-urls", "http://127.0.0.1:2380", "comma-separated peer URLs to listen on (also advertised)")
	logLevel := flag.String("log-level", "warn", "log level: debug, info, warn, error")
	noFsync := flag.Bool("unsafe-no-fsync", true, "disable fsync (data loss on crash; fine for tests)")
	flag.Parse()

	if *dataDir == "" {
		fmt.Fprintln(os.Stderr, "etcd: --data-dir is required")
		os.Exit(2)
	}
	if *advertiseClient == "" {
		*advertiseClient = *listenClient
	}

	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dataDir
	cfg.ListenClientUrls = parseURLs("listen-client-urls", *listenClient)
	cfg.AdvertiseClientUrls = parseURLs("advertise-client-urls", *advertiseClient)
	cfg.ListenPeerUrls = parseURLs("listen-peer-urls", *listenPeer)
	cfg.AdvertisePeerUrls = cfg.ListenPeerUrls
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = *logLevel
	cfg.LogOutputs = []string{"stderr"}
	cfg.UnsafeNoFsync = *noFsync

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: start: %v\n", err)
		os.Exit(1)
	}

	stop := make(chan string, 2)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() { stop <- (<-sigs).String() }()
	if os.Getenv("EXIT_ON_STDIN_EOF") == "1" {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop <- "stdin closed"
		}()
	}

	select {
	case <-e.Server.ReadyNotify():
		fmt.Printf("etcd ready: %s\n", *advertiseClient)
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcd: failed before becoming ready: %v\n", err)
		e.Close()
		os.Exit(1)
	case reason := <-stop:
		fmt.Fprintf(os.Stderr, "etcd: %s before becoming ready, stopping\n", reason)
		e.Close()
		os.Exit(1)
	case <-time.After(60 * time.Second):
		fmt.Fprintln(os.Stderr, "etcd: not ready after 60s, stopping")
		e.Server.Stop()
		e.Close()
		os.Exit(1)
	}

	select {
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcd: server error: %v\n", err)
		e.Close()
		os.Exit(1)
	case reason := <-stop:
		fmt.Fprintf(os.Stderr, "etcd: %s, stopping\n", reason)
		done := make(chan struct{})
		go func() { e.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			fmt.Fprintln(os.Stderr, "etcd: graceful stop timed out")
		}
		os.Exit(0)
	}
}
