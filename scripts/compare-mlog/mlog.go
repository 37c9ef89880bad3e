// Package mlog stands in for monis.app/mlog when building Azure Workload Identity's webhook for
// scripts/compare.sh. The webhook logs only on errors and at start-up, so on the measured path it
// only builds a logger with a name and values, as the real mlog does.
package mlog

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

type LogLevel string

const (
	LevelWarning LogLevel = ""
	LevelInfo    LogLevel = "info"
	LevelDebug   LogLevel = "debug"
	LevelTrace   LogLevel = "trace"
	LevelAll     LogLevel = "all"
)

type LogFormat string

const FormatJSON LogFormat = "json"

type LogSpec struct {
	Level  LogLevel
	Format LogFormat
}

// verbosity of each level, as klog V levels.
var verbosity = map[LogLevel]int{LevelWarning: 0, LevelInfo: 2, LevelDebug: 4, LevelTrace: 6, LevelAll: 108}

var current = LevelWarning

type Logger struct{ logr logr.Logger }

func New() Logger { return Logger{klog.Background()} }

func (l Logger) WithName(name string) Logger { return Logger{l.logr.WithName(name)} }

func (l Logger) WithValues(keysAndValues ...any) Logger {
	return Logger{l.logr.WithValues(keysAndValues...)}
}

func (l Logger) Info(msg string, keysAndValues ...any) {
	l.logr.V(verbosity[LevelInfo]).Info(msg, keysAndValues...)
}

func (l Logger) Error(msg string, err error, keysAndValues ...any) {
	l.logr.Error(err, msg, keysAndValues...)
}

func Logr() logr.Logger { return klog.Background() }

func Enabled(level LogLevel) bool { return verbosity[level] <= verbosity[current] }

func Setup() func() { return klog.Flush }

func Fatal(err error, keysAndValues ...any) {
	klog.Background().Error(err, "fatal", keysAndValues...)
	klog.Flush()
	os.Exit(1)
}

func ValidateAndSetLogLevelAndFormatGlobally(_ context.Context, spec LogSpec) error {
	if _, ok := verbosity[spec.Level]; !ok {
		return fmt.Errorf("unknown log level %q", spec.Level)
	}
	current = spec.Level
	flags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(flags)
	return flags.Set("v", fmt.Sprint(verbosity[spec.Level]))
}
