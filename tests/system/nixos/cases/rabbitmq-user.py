# The module's own RabbitMQ user (tests/system/nixos/cases/rabbitmq-user.nix).
import json
import shlex


def handle(body, want):
    status = machine.succeed(
        "curl -s -o /tmp/response -w '%{http_code}' -X POST http://127.0.0.1:8080/handle"
        f" -H 'Content-Type: application/json' --data-binary {shlex.quote(json.dumps(body))}"
    ).strip()
    assert status == str(want), f"{body}: HTTP {status}, want {want}: {machine.succeed('cat /tmp/response')}"


def logged(name, data):
    machine.wait_until_succeeds(
        f"curl -sf 'http://127.0.0.1:8082/logs?name={name}' | grep -F {shlex.quote(data)}", timeout=60
    )


rabbitmqctl = "runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq rabbitmqctl"

machine.wait_for_unit("switchboard.target")
machine.wait_for_unit("switchboard-rabbitmq-user.service")

with subtest("the user exists with the password of the file, and the services name it"):
    users = machine.succeed(f"{rabbitmqctl} -q list_users")
    assert "switchboard" in users.split(), users
    machine.succeed(f"{rabbitmqctl} authenticate_user switchboard module-run-amqp-password")
    machine.fail(f"{rabbitmqctl} authenticate_user switchboard wrong-password")
    for service in ["auth", "broker", "listener"]:
        settings = machine.succeed(f"cat /etc/switchboard/{service}.toml")
        assert "amqp://switchboard@" in settings and "guest" not in settings, settings
        # The drop-in resets the shipped unit's credentials, then names the file.
        unit = machine.succeed(f"systemctl cat switchboard-{service}.service")
        dropin = unit.split("overrides.conf", 1)[1]
        assert "LoadCredential=\nLoadCredential=" in dropin, dropin
        assert "LoadCredential=amqp-password:/etc/switchboard-test/amqp-password" in dropin, dropin
        for prop in ["After", "Requires"]:
            deps = machine.succeed(f"systemctl show -P {prop} switchboard-{service}.service").split()
            assert "switchboard-rabbitmq-user.service" in deps, f"{service} {prop}: {deps}"

with subtest("the listener consumes and the broker publishes as that user"):
    machine.wait_until_succeeds(f"{rabbitmqctl} -q list_connections user | grep -x switchboard", timeout=30)
    # The broker starts on its first connection and connects to RabbitMQ in
    # the background, after READY=1: an AMQP request that activates it can
    # get 502 (seen here). Activate it first and wait for its connection.
    machine.succeed("curl -sf -o /dev/null http://127.0.0.1:8080/ping")
    machine.wait_until_succeeds(
        f"test $({rabbitmqctl} -q list_connections user | grep -cx switchboard) -ge 2", timeout=30
    )
    handle({"action": "log", "log": {"name": "amqp-user", "data": "published as switchboard", "via": "amqp"}}, 202)
    logged("amqp-user", "published as switchboard")

with subtest("auth publishes its login events as that user"):
    handle({"action": "auth", "auth": {"email": "vmtest@example.com", "password": "wrong"}}, 401)
    machine.wait_until_succeeds(
        "runuser -u postgres -- psql -d switchboard-auth -tAc 'SELECT 1 FROM users LIMIT 0'", timeout=60
    )
    machine.succeed(
        "runuser -u postgres -- psql -d switchboard-auth -v ON_ERROR_STOP=1 -f /etc/switchboard-test/seed-user.sql"
    )
    handle({"action": "auth", "auth": {"email": "vmtest@example.com", "password": "vm-test-password"}}, 202)
    logged("authentication", "vmtest@example.com logged in")
    connections = machine.succeed(f"{rabbitmqctl} -q list_connections user").split()
    assert "guest" not in connections and "switchboard" in connections, connections
