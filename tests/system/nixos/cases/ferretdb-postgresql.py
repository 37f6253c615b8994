# FerretDB on PostgreSQL as the logger's store (tests/system/nixos/cases/ferretdb-postgresql.nix).
import json
import shlex


def log_via(via, name, data):
    body = json.dumps({"action": "log", "log": {"name": name, "data": data, "via": via}})
    status = machine.succeed(
        "curl -s -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:8080/handle"
        f" -H 'Content-Type: application/json' --data-binary {shlex.quote(body)}"
    ).strip()
    assert status == "202", f"log via {via}: HTTP {status}"


def logged(name, data):
    machine.wait_until_succeeds(
        f"curl -sf 'http://127.0.0.1:8082/logs?name={name}' | grep -F {shlex.quote(data)}", timeout=60
    )


def psql(sql):
    return machine.succeed(f"runuser -u postgres -- psql -tA -d ferretdb -c {shlex.quote(sql)}").strip()


machine.wait_for_unit("switchboard.target")
machine.wait_for_unit("ferretdb.service")

with subtest("FerretDB runs the pg handler and waits for PostgreSQL"):
    environment = machine.succeed("systemctl show -P Environment ferretdb.service")
    assert "FERRETDB_HANDLER=pg" in environment, environment
    assert "FERRETDB_POSTGRESQL_URL=postgres://ferretdb@localhost:5432/ferretdb?host=/run/postgresql" in environment, environment
    for prop in ["After", "Requires"]:
        deps = machine.succeed(f"systemctl show -P {prop} ferretdb.service").split()
        assert "postgresql.target" in deps, f"{prop}: {deps}"

with subtest("the role ferretdb owns the database ferretdb"):
    owner = psql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'ferretdb'")
    assert owner == "ferretdb", owner

with subtest("entries through every transport are stored in PostgreSQL"):
    for via in ["http", "rpc", "grpc", "amqp"]:
        log_via(via, f"pg-{via}", f"kept in postgresql via {via}")
    for via in ["http", "rpc", "grpc", "amqp"]:
        logged(f"pg-{via}", f"kept in postgresql via {via}")
    # FerretDB maps the MongoDB database `logs` to a PostgreSQL schema.
    assert psql("SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'logs'") == "1"
    # Nothing went to SQLite files.
    machine.succeed("test -z \"$(ls -A /var/lib/private/ferretdb 2>/dev/null | grep -F .sqlite)\"")
