"""Stand-ins for the NixOS dependency servers, for the system test container.

The stand-in evaluator (nixos/tests/eval/stub-eval.nix) computes the units
NixOS's own modules define for the servers the Switchboard module enables
(services.postgresql, .rabbitmq, .ferretdb, .mongodb, .mailhog, .epmd), with
their options as configured, but it summarises their scripts, leaves out some
hardening keys, and its packages are fake store paths. This module, used by
prepare.py between evaluation and rendering, makes those units run on the
Debian host's servers:

  patch(summary)   replaces the evaluator's summaries with nixpkgs' own text
                   (postgresql's preStart and postgresql-setup's script, the
                   real postgresql.service hardening, mongodb's preStart and
                   postStart), computed from the same option values;
  config_files()   writes the files those units name by store path, as nixpkgs
                   would generate them: postgresql.conf, pg_hba.conf,
                   pg_ident.conf, rabbitmq.conf, enabled_plugins,
                   advanced.config, mongodb.conf;
  materialise()    creates every other store path the rendered files name, as
                   a package whose bin/ (sbin/) holds the host's programs:
                   PostgreSQL 15 (/usr/lib/postgresql/15/bin), RabbitMQ
                   (/usr/lib/rabbitmq/bin), epmd, MailHog, FerretDB, and the
                   host's /usr/bin for tool packages (coreutils, python3, ...).

pkgs.ferretdb's bin/ferretdb is a wrapper that turns the FERRETDB_* variables
nixpkgs' unit sets into the flags of the FerretDB build here; pkgs.mongodb's
(pkgs.mongodb-ce's) bin/mongod is a wrapper that reads `--config` (the keys
NixOS writes), honours --fork and --pidfilepath, and runs FerretDB in mongod's
place: there is no mongod on the host. Every such substitution is returned as
a deviation for the report.
"""

import hashlib
import os
import re
import shlex

PG_BIN = "/usr/lib/postgresql/15/bin"
PG_SHARE = "/usr/share/postgresql/15"
PG_LIB = "/usr/lib/postgresql/15/lib"
RABBITMQ_BIN = "/usr/lib/rabbitmq/bin"
MAILHOG = "/usr/local/bin/mailhog"
FERRETDB = "/usr/local/bin/ferretdb"
EPMD = "/usr/bin/epmd"

STORE_RE = re.compile(r"/nix/store/([0-9a-z]{32})-([A-Za-z0-9+._?=-]+)")
# Packages whose programs the host's /usr/bin and /usr/sbin stand in for.
TOOL_PACKAGES = {
    "coreutils", "coreutils-full", "findutils", "gnugrep", "gnused", "systemd", "util-linux", "procps",
    "curl", "python3", "iproute2", "openssl", "jq", "shadow", "kmod", "iptables", "nftables", "sqlite",
    "gawk", "gnutar", "gzip", "which", "diffutils", "less", "perl", "strace", "rsync", "socat",
}


def fake_store_path(name, content):
    return f"/nix/store/{hashlib.sha256((name + ':' + content).encode()).hexdigest()[:32]}-{name}"


# --- nixpkgs' postgresql.nix -------------------------------------------------

def pg_to_str(value):
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def pg_user_script(user):
    name = user["name"]
    clauses = []
    for n, v in sorted(user.get("ensureClauses", {}).items()):
        directive = n.replace("_", " ").upper()
        if isinstance(v, bool):
            clauses.append(directive if v else "NO" + directive)
        elif isinstance(v, str):
            clauses.append(f"{directive} '{v}'")
        else:
            clauses.append(f"{directive} {v}")
    alter = f'ALTER ROLE "{name}" {" ".join(clauses)};' if clauses else ""
    user_clauses = f"psql -tAc {shlex.quote(alter)}\n" if alter else ""
    ownership = f"psql -tAc 'ALTER DATABASE \"{name}\" OWNER TO \"{name}\";'\n" if user.get("ensureDBOwnership") else ""
    return (f"psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='{name}'\" | grep -q 1 || psql -tAc 'CREATE USER \"{name}\"'\n"
            f"{user_clauses}\n{ownership}\n")


def patch_postgresql(summary, files, deviations):
    pg = summary["services"]["postgresql"]
    units = summary["systemd"]["services"]
    data = pg["dataDir"]
    settings = {k: v for k, v in pg["settings"].items() if v is not None}
    conf = "\n".join(f"{n} = {pg_to_str(v)}" for n, v in sorted(settings.items()))
    conf_dir = fake_store_path("postgresql.conf", conf)
    files[f"{conf_dir}/postgresql.conf"] = conf
    files[settings["hba_file"]] = pg["authentication"]
    files[settings["ident_file"]] = pg["identMap"]
    initdb_args = " ".join(shlex.quote(a) for a in pg.get("initdbArgs", []))
    units["postgresql"]["preStart"] = (
        f"if ! test -e {data}/PG_VERSION; then\n"
        f"  # Cleanup the data directory.\n"
        f"  rm -f {data}/*.conf\n\n"
        f"  # Initialise the database.\n"
        f"  initdb -U {pg.get('superUser', 'postgres')} {initdb_args}\n\n"
        f"  # See postStart!\n"
        f"  touch \"{data}/.first_startup\"\n"
        f"fi\n\n"
        f"ln -sfn \"{conf_dir}/postgresql.conf\" \"{data}/postgresql.conf\"\n")
    filters = sorted(((v["priority"], name) for name, v in sorted(pg.get("systemCallFilter", {}).items())
                      if v.get("enable")), key=lambda p: p[0])
    hardening = {
        "CapabilityBoundingSet": [""], "DevicePolicy": "closed", "LockPersonality": True,
        "MemoryDenyWriteExecute": settings.get("jit") == "off", "NoNewPrivileges": True,
        "PrivateDevices": True, "PrivateMounts": True, "PrivateTmp": True, "ProcSubset": "pid",
        "ProtectClock": True, "ProtectControlGroups": True, "ProtectHome": True, "ProtectHostname": True,
        "ProtectKernelLogs": True, "ProtectKernelModules": True, "ProtectKernelTunables": True,
        "ProtectProc": "invisible", "ProtectSystem": "strict", "RemoveIPC": True,
        "RestrictAddressFamilies": ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"],
        "RestrictNamespaces": True, "RestrictRealtime": True, "RestrictSUIDSGID": True,
        "SystemCallArchitectures": "native", "SystemCallFilter": [name for _, name in filters],
    }
    sc = units["postgresql"]["serviceConfig"]
    for key, value in hardening.items():
        sc.setdefault(key, value)
    initial = pg.get("initialScript")
    first = f'  psql -f "{initial}" -d postgres\n' if initial else ""
    script = (
        "# If we're in standby mode, don't perform any setup\n"
        f"if [[ -f \"{data}/standby.signal\" ]]; then\n"
        "  echo \"Skipping setup because PostgreSQL is in standby mode\"\n"
        "  exit 0\n"
        "fi\n\n"
        "check-connection() {\n"
        "  psql -d postgres -v ON_ERROR_STOP=1 <<-'  EOF'\n"
        "    SELECT pg_is_in_recovery() \\gset\n"
        "    \\if :pg_is_in_recovery\n"
        "    \\i still-recovering\n"
        "    \\endif\n"
        "  EOF\n"
        "}\n"
        "while ! check-connection 2> /dev/null; do\n"
        "    if ! systemctl is-active --quiet postgresql.service; then exit 1; fi\n"
        "    sleep 0.1\n"
        "done\n\n"
        f"if test -e \"{data}/.first_startup\"; then\n"
        f"{first}"
        f"  rm -f \"{data}/.first_startup\"\n"
        "fi\n")
    if pg.get("ensureDatabases"):
        script += "".join(
            f"psql -tAc \"SELECT 1 FROM pg_database WHERE datname = '{d}'\" | grep -q 1 || psql -tAc 'CREATE DATABASE \"{d}\"'\n"
            for d in pg["ensureDatabases"]) + "\n"
    script += "".join(pg_user_script(u) for u in pg.get("ensureUsers", [])) + "\n"
    units["postgresql-setup"]["script"] = script
    if initial and initial.startswith("/nix/store/") and initial not in files:
        deviations.append(f"services.postgresql.initialScript {initial}: content unknown to the evaluation")
    deviations.append("postgresql.service runs Debian's PostgreSQL 15 (/usr/lib/postgresql/15/bin) where NixOS "
                      f"runs {os.path.basename(pg['package']).split('-', 1)[1]}; preStart, postgresql-setup's "
                      "script and the unit's hardening are nixpkgs' text (the evaluator summarises them)")


# --- nixpkgs' mongodb.nix ----------------------------------------------------

def patch_mongodb(summary, files, deviations):
    m = summary["services"]["mongodb"]
    unit = summary["systemd"]["services"]["mongodb"]
    conf_path = re.search(r"--config (\S+)", unit["serviceConfig"]["ExecStart"]).group(1)
    quiet = "systemLog.quiet: true" if m.get("quiet") else ""
    auth = "security.authorization: enabled" if m.get("enableAuth") else ""
    repl = f"replication.replSetName: {m['replSetName']}" if m.get("replSetName") else ""
    files[conf_path] = (f"net.bindIp: {m['bind_ip']}\n{quiet}\nsystemLog.destination: syslog\n"
                        f"storage.dbPath: {m['dbpath']}\n{auth}\n{repl}\n{m.get('extraConfig', '')}\n")
    db, pid, user = m["dbpath"], m["pidFile"], m["user"]
    unit["preStart"] = (f"rm {db}/mongod.lock || true\n"
                        f"if ! test -e {db}; then\n    install -d -m0700 -o {user} {db}\nfi\n"
                        f"if ! test -e {db}/storage.bson; then\n    # See postStart!\n    touch {db}/.first_startup\nfi\n"
                        f"if ! test -e {pid}; then\n    install -D -o {user} /dev/null {pid}\nfi ")
    unit["postStart"] = (f"if test -e \"{db}/.first_startup\"; then\n  \n  rm -f \"{db}/.first_startup\"\nfi\n")
    unit["serviceConfig"].setdefault(
        "ExecStartPost", [fake_store_path("unit-script-mongodb-post-start", unit["postStart"])
                          + "/bin/mongodb-post-start"])
    if m.get("enableAuth") or m.get("initialScript"):
        deviations.append("services.mongodb.enableAuth/initialScript: not emulated (no mongosh here)")
    deviations.append("mongodb.service: there is no mongod on this host; pkgs.mongodb's bin/mongod is a wrapper "
                      "running FerretDB (SQLite) with mongod's --config/--fork/--pidfilepath behaviour, so the unit "
                      "(Type=forking, PIDFile, User=mongodb) is NixOS's, the server is not MongoDB")


# --- nixpkgs' rabbitmq.nix ---------------------------------------------------

def patch_rabbitmq(summary, files, deviations):
    r = summary["services"]["rabbitmq"]
    env = summary["systemd"]["services"]["rabbitmq"]["environment"]
    # lib.generators.toKeyValue { }: "key=value" lines.
    files[env["RABBITMQ_CONFIG_FILE"]] = "".join(f"{k}={v}\n" for k, v in sorted(r["configItems"].items()))
    files[env["RABBITMQ_ENABLED_PLUGINS_FILE"]] = f"[ {','.join(r.get('plugins', []))} ].\n"
    if env.get("RABBITMQ_ADVANCED_CONFIG_FILE"):
        files[env["RABBITMQ_ADVANCED_CONFIG_FILE"]] = r["config"]
    if r.get("unsafeCookie"):
        unit = summary["systemd"]["services"]["rabbitmq"]
        unit["preStart"] = f"install -m 600 <(echo -n {r['unsafeCookie']}) {r['dataDir']}/.erlang.cookie\n"
        unit["serviceConfig"].setdefault("ExecStartPre", [fake_store_path("unit-script-rabbitmq-pre-start",
                                                                          unit["preStart"]) + "/bin/rabbitmq-pre-start"])
    version = sorted(os.listdir("/usr/lib/rabbitmq/lib")) if os.path.isdir("/usr/lib/rabbitmq/lib") else ["?"]
    deviations.append(f"rabbitmq.service runs Debian's RabbitMQ ({version[-1]}, /usr/lib/rabbitmq/bin) where "
                      "NixOS 26.05 runs rabbitmq-server 4.x; epmd.service runs Debian's /usr/bin/epmd")


def patch(summary):
    """Fills in what the evaluator summarises. Returns (files by store path, deviations)."""
    files, deviations = {}, []
    services = summary["services"]
    units = summary["systemd"]["services"]
    if "postgresql" in services and "postgresql" in units:
        patch_postgresql(summary, files, deviations)
    if "mongodb" in services and "mongodb" in units:
        patch_mongodb(summary, files, deviations)
    if "rabbitmq" in services and "rabbitmq" in units:
        patch_rabbitmq(summary, files, deviations)
    if "ferretdb" in services:
        deviations.append("ferretdb.service: pkgs.ferretdb's bin/ferretdb is a wrapper turning the FERRETDB_* "
                          "environment of NixOS's unit into the flags of the FerretDB 1.24 build in "
                          "/usr/local/bin (SQLite handler only; FERRETDB_POSTGRESQL_URL, _TELEMETRY ignored)")
    if "mailhog" in services:
        deviations.append("mailhog.service: pkgs.mailhog's bin/MailHog (and the evaluator's bin/mailhog) is "
                          "/usr/local/bin/mailhog, MailHog 1.0.1 built from source as nixpkgs builds it")
    return files, deviations


# --- store paths ---------------------------------------------------------------

FERRETDB_WRAPPER = f"""#!/bin/bash
# pkgs.ferretdb stand-in: Switchboard's build in {FERRETDB} reads the same
# FERRETDB_* variables and flags as upstream's FerretDB 1.24, with both the
# postgresql (pg) and the sqlite handler.
exec {FERRETDB} "$@"
"""

MONGOD_WRAPPER = f"""#!/bin/bash
# pkgs.mongodb / pkgs.mongodb-ce stand-in: mongod's command line as NixOS's
# mongodb.service uses it (--config FILE --fork --pidfilepath FILE), served by
# FerretDB ({FERRETDB}, SQLite in storage.dbPath).
set -eu
config= fork= pidfile=
while [ $# -gt 0 ]; do
  case $1 in
    --config|-f) config=$2; shift 2 ;;
    --fork) fork=1; shift ;;
    --pidfilepath) pidfile=$2; shift 2 ;;
    *) echo "stand-in mongod: ignoring $1" >&2; shift ;;
  esac
done
bind=127.0.0.1 port=27017 db=/data/db
if [ -n "$config" ]; then
  while IFS= read -r line; do
    key=${{line%%:*}}; value=${{line#*:}}; value=${{value# }}
    case $key in
      net.bindIp) bind=${{value%%,*}} ;;
      net.port) port=$value ;;
      storage.dbPath) db=$value ;;
    esac
  done < "$config"
fi
case $bind in *:*) listen="[$bind]:$port" ;; *) listen="$bind:$port" ;; esac
mkdir -p "$db"
args=(--listen-addr="$listen" --handler=sqlite --sqlite-url="file:$db/" --state-dir="$db")
if [ -z "$fork" ]; then
  exec {FERRETDB} "${{args[@]}}"
fi
setsid {FERRETDB} "${{args[@]}}" </dev/null &
child=$!
# mongod --fork returns once the server accepts connections.
for _ in $(seq 600); do
  if (exec 3<>"/dev/tcp/${{bind/0.0.0.0/127.0.0.1}}/$port") 2>/dev/null; then
    [ -n "$pidfile" ] && echo "$child" > "$pidfile"
    exit 0
  fi
  kill -0 "$child" 2>/dev/null || {{ echo "stand-in mongod: FerretDB exited" >&2; exit 1; }}
  sleep 0.1
done
echo "stand-in mongod: not listening on $listen after 60 s" >&2
exit 1
"""


def materialise(root, extra_paths=(), nc_shim=None):
    """Creates the store paths the files under ROOT name and nothing provides yet.
    Returns notes about those it could not provide."""
    refs = set(extra_paths)
    for base in ("etc", "nix/store"):
        for dirpath, _dirs, names in os.walk(os.path.join(root, base)):
            for n in names:
                full = os.path.join(dirpath, n)
                if os.path.islink(full) or os.path.getsize(full) > 1 << 20:
                    continue
                try:
                    with open(full, errors="replace") as f:
                        refs.update(m.group(0) for m in STORE_RE.finditer(f.read()))
                except OSError:
                    pass
    notes = []
    for ref in sorted(refs):
        m = STORE_RE.match(ref)
        top = f"/nix/store/{m.group(1)}-{m.group(2)}"
        full = os.path.join(root, top.lstrip("/"))
        if os.path.lexists(full):
            continue
        name = re.sub(r"-[0-9][0-9.]*$", "", m.group(2))

        def links(**dirs):
            os.makedirs(full)
            for d, target in dirs.items():
                os.symlink(target, os.path.join(full, d))

        def programs(**progs):
            os.makedirs(os.path.join(full, "bin"))
            for p, target in progs.items():
                os.symlink(target, os.path.join(full, "bin", p))

        def script(prog, text):
            os.makedirs(os.path.join(full, "bin"))
            with open(os.path.join(full, "bin", prog), "w") as f:
                f.write(text)
            os.chmod(os.path.join(full, "bin", prog), 0o555)

        if name == "postgresql":
            links(bin=PG_BIN, share=PG_SHARE, lib=PG_LIB)
        elif name == "rabbitmq-server":
            links(bin=RABBITMQ_BIN, sbin=RABBITMQ_BIN)
        elif name == "erlang":
            programs(epmd=EPMD, erl="/usr/bin/erl")
        elif name in ("mailhog", "MailHog"):
            programs(mailhog=MAILHOG, MailHog=MAILHOG)
        elif name == "ferretdb":
            script("ferretdb", FERRETDB_WRAPPER)
        elif name in ("mongodb", "mongodb-ce"):
            script("mongod", MONGOD_WRAPPER)
        elif name in ("bash", "bashInteractive"):
            programs(bash="/bin/bash", sh="/bin/bash")
        elif name == "netcat" and nc_shim:
            programs(nc=nc_shim)
        elif name in TOOL_PACKAGES:
            links(bin="/usr/bin", sbin="/usr/sbin")
        else:
            notes.append(f"{top}: no stand-in for package '{m.group(2)}'")
    return notes
