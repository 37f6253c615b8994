# services.mongodb as the logger's server (tests/system/nixos/cases/mongodb.nix).
import json
import shlex


def log_via(via, name, data):
    body = json.dumps({"action": "log", "log": {"name": name, "data": data, "via": via}})
    post = (
        "curl -s -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:8080/handle"
        f" -H 'Content-Type: application/json' --data-binary {shlex.quote(body)}"
    )
    if via == "amqp":
        # The first request of this script started the broker, whose AMQP
        # connection comes up beside its first requests: a 502 until then.
        machine.wait_until_succeeds(f"test \"$({post})\" = 202", timeout=30)
        return
    status = machine.succeed(post).strip()
    assert status == "202", f"log via {via}: HTTP {status}"


def logged(name, data):
    machine.wait_until_succeeds(
        f"curl -sf 'http://127.0.0.1:8082/logs?name={name}' | grep -F {shlex.quote(data)}", timeout=60
    )


machine.wait_for_unit("switchboard.target")
machine.wait_for_unit("mongodb.service")

with subtest("mongodb.service is NixOS's forking unit and the logger's dependency"):
    machine.fail("systemctl cat ferretdb.service")
    assert machine.succeed("systemctl show -P Type mongodb.service").strip() == "forking"
    assert machine.succeed("systemctl show -P User mongodb.service").strip() == "mongodb"
    main_pid = machine.succeed("systemctl show -P MainPID mongodb.service").strip()
    assert machine.succeed("cat /run/mongodb.pid").strip() == main_pid, "PIDFile is the main process"
    for prop in ["After", "Requires"]:
        deps = machine.succeed(f"systemctl show -P {prop} switchboard-logger.service").split()
        assert "mongodb.service" in deps, f"{prop}: {deps}"

with subtest("entries land in the database"):
    for via in ["http", "rpc", "grpc", "amqp"]:
        log_via(via, f"mongo-{via}", f"stored via {via}")
    for via in ["http", "rpc", "grpc", "amqp"]:
        logged(f"mongo-{via}", f"stored via {via}")
    # preStart created the dbpath for the mongodb user.
    assert machine.succeed("stat -c %U /var/db/mongodb").strip() == "mongodb"

with subtest("a restart of mongodb.service restarts the logger and loses nothing"):
    before = machine.succeed("systemctl show -P InvocationID switchboard-logger.service").strip()
    machine.succeed("systemctl restart mongodb.service")
    logged("mongo-http", "stored via http")
    after = machine.succeed("systemctl show -P InvocationID switchboard-logger.service").strip()
    assert before != after, "the logger was not restarted with mongodb.service"
