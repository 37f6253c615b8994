// Command ferretdb is Switchboard's build of FerretDB for development and tests:
// a MongoDB wire-protocol server on one TCP listener, telemetry off, and no
// other listeners (no debug HTTP, no state file).
//
// It speaks upstream's command line (the subset below, as flags or as
// FERRETDB_* variables, with upstream's defaults), so the test kit and the
// system tests drive this build and nixpkgs' `ferretdb` (upstream's own
// cmd/ferretdb) the same way: --listen-addr, --handler (postgresql, its
// alias pg, or sqlite), --postgresql-url, --sqlite-url (a directory URI, which
// may carry pragmas such as ?_pragma=synchronous(normal)), --log-level.
// --state-dir, --debug-addr and --telemetry are accepted for compatibility
// and have nothing to configure here.
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
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

const ferretModule = "github.com/FerretDB/FerretDB"

// recipeRevision changes whenever this program's flags or behaviour do, so
// that scripts/setup rebuilds an installed binary of the same FerretDB
// version built from an older recipe.
const recipeRevision = 3

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

// setting declares a string flag whose default is the FERRETDB_* variable of
// the same name when it is set, as upstream's command line does.
func setting(name, fallback, usage string) *string {
	variable := "FERRETDB_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	if value, ok := os.LookupEnv(variable); ok {
		fallback = value
	}
	return flag.String(name, fallback, usage+" (env "+variable+")")
}

func main() {
	listen := setting("listen-addr", "127.0.0.1:27017", "TCP address to serve the MongoDB wire protocol on")
	handler := setting("handler", "postgresql", "backend: postgresql (alias pg) or sqlite")
	postgresqlURL := setting("postgresql-url", "postgres://127.0.0.1:5432/ferretdb", "PostgreSQL URL for the postgresql handler")
	sqliteURL := setting("sqlite-url", "file:data/", "SQLite URI of an existing directory for the sqlite handler, e.g. file:/var/lib/ferretdb/?_pragma=synchronous(normal)")
	logLevel := setting("log-level", "info", "debug, info, warn or error")
	setting("state-dir", ".", "accepted for upstream compatibility; this build keeps no state file")
	setting("debug-addr", "-", "accepted for upstream compatibility; this build serves no debug HTTP")
	setting("telemetry", "disable", "accepted for upstream compatibility; telemetry is always off")
	showVersion := flag.Bool("version", false, "print the FerretDB version and exit")
	flag.Parse()

	if *showVersion {
		fmt.Printf("ferretdb %s (switchboard embedded build r%d, postgresql and sqlite handlers)\n", ferretVersion(), recipeRevision)
		return
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: --log-level %q: %v\n", *logLevel, err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	config := &ferretdb.Config{
		Listener: ferretdb.ListenerConfig{TCP: *listen},
		Logger:   logger,
	}
	var backend string
	switch *handler {
	case "postgresql", "pg":
		config.Handler = "postgresql"
		config.PostgreSQLURL = *postgresqlURL
		backend = "postgresql"
	case "sqlite":
		config.Handler = "sqlite"
		config.SQLiteURL = *sqliteURL
		backend = "sqlite " + *sqliteURL
	default:
		fmt.Fprintf(os.Stderr, "ferretdb: --handler must be postgresql (or pg) or sqlite, not %q\n", *handler)
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
