// Command ferretdb is Switchboard's build of FerretDB for development and tests:
// a MongoDB wire-protocol server on one loopback TCP listener, telemetry off,
// and no other listeners (no debug HTTP, no state file). Its backend is SQLite
// (a folder of database files) or PostgreSQL (-postgresql-url), and SQLite's
// commit durability is chosen with -sqlite-synchronous: the benchmark's
// `store` scenario compares the three.
//
// Upstream's cmd/ferretdb panics when built outside its own module ("Invalid
// build/version/version.txt"), so we embed the library package instead; go.mod
// pins the FerretDB version, go.sum makes the build reproducible.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

const ferretModule = "github.com/FerretDB/FerretDB"

// recipeRevision changes whenever this program's flags or behaviour do, so
// that scripts/setup rebuilds an installed binary of the same FerretDB
// version built from an older recipe.
const recipeRevision = 2

// ferretVersion reports the FerretDB module version this binary was built
// from, read from the build info so it can never drift from go.mod.
func ferretVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, dep := range info.Deps {
		if dep.Path == ferretModule {
			return dep.Version
		}
	}
	return "unknown"
}

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to serve the MongoDB wire protocol on")
	dir := flag.String("sqlite-dir", "", "directory holding the SQLite databases (created if missing; required unless -postgresql-url)")
	synchronous := flag.String("sqlite-synchronous", "full", "SQLite's synchronous pragma: full (fsync on every commit, survives a power loss) or normal (WAL without fsync on commit, survives a crash of the process, not of the machine)")
	postgresqlURL := flag.String("postgresql-url", "", "use the PostgreSQL backend with this connection string (postgres://user@host:port/database) instead of SQLite")
	debugLog := flag.Bool("debug", false, "log at debug level")
	showVersion := flag.Bool("version", false, "print the FerretDB version and exit")
	flag.Parse()

	if *showVersion {
		fmt.Printf("ferretdb %s (switchboard embedded build r%d, sqlite and postgresql backends)\n", ferretVersion(), recipeRevision)
		return
	}

	level := slog.LevelInfo
	if *debugLog {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	config := &ferretdb.Config{
		Listener: ferretdb.ListenerConfig{TCP: *listen},
		Logger:   logger,
	}
	var backend string
	switch {
	case *postgresqlURL != "" && *dir != "":
		fmt.Fprintln(os.Stderr, "ferretdb: -sqlite-dir and -postgresql-url exclude each other")
		os.Exit(2)
	case *postgresqlURL != "":
		config.Handler = "postgresql"
		config.PostgreSQLURL = *postgresqlURL
		backend = "postgresql"
	case *dir != "":
		url, err := sqliteURL(*dir, *synchronous)
		if err != nil {
			fmt.Fprintf(os.Stderr, "ferretdb: %v\n", err)
			os.Exit(2)
		}
		config.Handler = "sqlite"
		config.SQLiteURL = url
		backend = "sqlite synchronous=" + *synchronous
	default:
		fmt.Fprintln(os.Stderr, "ferretdb: -sqlite-dir or -postgresql-url is required")
		os.Exit(2)
	}

	f, err := ferretdb.New(config)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: %v\n", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	logger.Info("ferretdb starting", "version", ferretVersion(), "listen", *listen, "backend", backend)
	if err := f.Run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: %v\n", err)
		os.Exit(1)
	}
	logger.Info("ferretdb stopped")
}

// sqliteURL is the SQLite backend's URI for dir (created if missing): a
// directory with a trailing slash, and the synchronous pragma. FerretDB adds
// its own defaults (WAL, busy timeout) to whatever pragmas are given.
func sqliteURL(dir, synchronous string) (string, error) {
	switch synchronous {
	case "full", "normal":
	default:
		return "", fmt.Errorf("-sqlite-synchronous must be full or normal, not %q", synchronous)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("bad -sqlite-dir %q: %v", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", fmt.Errorf("cannot create %s: %v", abs, err)
	}
	query := url.Values{}
	query.Add("_pragma", "synchronous("+synchronous+")")
	return "file:" + abs + "/?" + query.Encode(), nil
}
