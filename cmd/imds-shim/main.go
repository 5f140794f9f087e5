// Command imds-shim makes 169.254.169.254 answer on an on-premises Linux host
// the way EC2's instance metadata service does, serving short-lived STS
// credentials for one IAM role. See imds-shim(8) and README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/imds-shim/imds-shim/pkg/config"
	"github.com/imds-shim/imds-shim/pkg/daemon"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "0.0.0-dev"

const usage = `imds-shim — the EC2 instance metadata service for on-premises hosts

Usage:
  imds-shim serve   [-c FILE]          run the daemon (what the systemd unit runs)
  imds-shim check   [-c FILE] [--no-sts]
                                       validate the config, print the plan, try STS once
  imds-shim cleanup                    remove address and rules left by any earlier run
  imds-shim status  [--json]           ask the running daemon what it is doing
  imds-shim reload  [--timeout D]      re-read the config; wait until applied (exit 0) or rejected (exit 3)
  imds-shim version                    print the version
  imds-shim help                       this text

Run "imds-shim COMMAND --help" for a command's flags.

Exit codes:
  0  success
  1  runtime failure (e.g. teardown failed, status could not reach the daemon)
  64 bad command line
  3  configuration missing or invalid
  4  no credentials from STS (serve: within start_timeout; check: the trial call)
  5  address, rules or listener could not be set up
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return daemon.ExitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return cmdServe(rest, stdout, stderr)
	case "check":
		return cmdCheck(rest, stdout, stderr)
	case "cleanup":
		return cmdCleanup(rest, stdout, stderr)
	case "status":
		return cmdStatus(rest, stdout, stderr)
	case "reload":
		return cmdReload(rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "imds-shim %s\n", version)
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "imds-shim: unknown command %q\n\n%s", cmd, usage)
		return daemon.ExitUsage
	}
}

// newFlags returns a flag set for a subcommand; parse handles its errors.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // parse prints the usage, to stdout for --help
	synopses[fs] = synopsis
	return fs
}

var synopses = map[*flag.FlagSet]string{}

func printUsage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "Usage: imds-shim %s\n\nFlags:\n", synopses[fs])
	out := fs.Output()
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(out)
}

// parse handles -h/--help (usage on stdout, exit 0) and flag errors (usage
// on stderr, ExitUsage); ok is false when the caller should return code.
func parse(fs *flag.FlagSet, args []string, stdout io.Writer) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(fs, stdout)
			return 0, false
		}
		printUsage(fs, fs.Output())
		return daemon.ExitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "imds-shim %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return daemon.ExitUsage, false
	}
	return 0, true
}

// runtimeDir is where the token key and the control socket live: systemd's
// RuntimeDirectory= when set, /run/imds-shim otherwise. Never persistent disk.
func runtimeDir() string {
	if d := os.Getenv("RUNTIME_DIRECTORY"); d != "" {
		return filepath.SplitList(d)[0]
	}
	return "/run/imds-shim"
}

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("serve", "serve [-c FILE]", stderr)
	cfgPath := fs.String("c", config.DefaultPath, "configuration `file`")
	fs.StringVar(cfgPath, "config", config.DefaultPath, "configuration `file` (same as -c)")
	rt := fs.String("runtime-dir", runtimeDir(), "`dir`ectory for the token key and control socket")
	if code, ok := parse(fs, args, stdout); !ok {
		return code
	}
	// The file is read once here; the daemon's first Load is this result.
	cfg, cfgErr := loadConfig(*cfgPath)
	logs := newLogging(stderr, cfg)
	log := logs.logger

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan daemon.Reload)
	go func() {
		for range hup {
			select {
			case reload <- daemon.Reload{}:
			case <-ctx.Done():
				return
			}
		}
	}()

	deps, err := productionDeps(log, logs, *rt, cfg, cfgErr)
	if err != nil {
		log.Error("imds-shim failed to start", "err", err)
		return daemon.ExitFailure
	}
	if err := daemon.Run(ctx, *cfgPath, deps, reload); err != nil {
		log.Error("imds-shim failed", "err", err)
		var ee *daemon.ExitError
		if errors.As(err, &ee) {
			return ee.Code
		}
		return daemon.ExitFailure
	}
	return 0
}

// logging builds the logger from the config's log keys when the file is
// valid (text at info otherwise); the level follows reloads.
type logging struct {
	logger *slog.Logger
	level  *slog.LevelVar
}

func newLogging(w io.Writer, c *config.Config) *logging {
	l := &logging{level: new(slog.LevelVar)}
	format := config.DefaultLogFormat
	if c != nil {
		format = c.Log.Format
		l.setLevel(c.Log.Level)
	}
	opts := &slog.HandlerOptions{Level: l.level}
	if format == "json" {
		l.logger = slog.New(slog.NewJSONHandler(w, opts))
	} else {
		l.logger = slog.New(slog.NewTextHandler(w, opts))
	}
	return l
}

func (l *logging) setLevel(s string) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(s)); err == nil {
		l.level.Set(lv)
	}
}
