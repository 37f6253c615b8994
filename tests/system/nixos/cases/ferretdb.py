# FerretDB as the logger's MongoDB server (tests/system/nixos/cases/ferretdb.nix).
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


machine.wait_for_unit("switchboard.target")
machine.wait_for_unit("ferretdb.service")

with subtest("FerretDB is the only MongoDB server, and the logger's dependency"):
    machine.fail("systemctl cat mongodb.service")
    for prop in ["After", "Requires"]:
        deps = machine.succeed(f"systemctl show -P {prop} switchboard-logger.service").split()
        assert "ferretdb.service" in deps, f"{prop}: {deps}"
    settings = machine.succeed("cat /etc/switchboard/logger.toml")
    assert "mongodb://127.0.0.1:27017" in settings, settings

with subtest("ferretdb.service is active only once it accepts connections"):
    # The module's postStart waits for the port: right after the start job
    # returns, a connection must succeed.
    machine.succeed("systemctl restart ferretdb.service")
    machine.succeed("nc -z 127.0.0.1 27017")

with subtest("entries land in FerretDB's state directory"):
    for via in ["http", "rpc", "grpc", "amqp"]:
        log_via(via, f"ferret-{via}", f"kept by ferretdb via {via}")
    for via in ["http", "rpc", "grpc", "amqp"]:
        logged(f"ferret-{via}", f"kept by ferretdb via {via}")
    # DynamicUser=yes with StateDirectory=ferretdb: the data is in /var/lib/private.
    machine.succeed("test -n \"$(ls -A /var/lib/private/ferretdb)\"")

with subtest("a restart of FerretDB restarts the logger (Requires=) and loses nothing"):
    before = machine.succeed("systemctl show -P InvocationID switchboard-logger.service").strip()
    machine.succeed("systemctl restart ferretdb.service")
    logged("ferret-rpc", "kept by ferretdb via rpc")
    after = machine.succeed("systemctl show -P InvocationID switchboard-logger.service").strip()
    assert before != after, "the logger was not restarted with FerretDB"
    log_via("rpc", "ferret-after", "after the restart")
    logged("ferret-after", "after the restart")
