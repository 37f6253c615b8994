#!/usr/bin/python3
"""The system test's checks, run by probe.service inside the container booted by
tests/system/run, as root, with systemd as PID 1.

It installs Switchboard with scripts/install, starts it through
switchboard.target next to distribution-style dependency units, and checks what
only a real service manager can show: readiness (Type=notify), socket
activation, every service's metrics door, restarts that lose no request, the
broker's paths end to end, journald fields, the sandbox as the kernel enforces
it, the IP allow lists and the watchdog. Results go to /out/results (one
PASS/FAIL line per check), the security scores to /out/scores, and the
journal of every unit involved in a failed check to /out/journal-<unit>.log.
Exits 1 when anything failed.

Standard library only: the interpreter is the host's /usr/bin/python3.
"""

import http.client
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid

OUT = "/out"
PREFIX = "/opt/switchboard"
BINDIR = f"{PREFIX}/bin"
SERVICES = ["broker", "auth", "logger", "mail", "listener", "frontend"]
SOCKET_ACTIVATED = ["broker", "auth", "logger", "mail", "frontend"]
PORTS = {"broker": 8080, "auth": 8081, "logger": 8082, "mail": 8083, "frontend": 8084}
# Every service's metrics door (GET /metrics, Prometheus text format); the
# listener's is its only socket.
METRICS_PORTS = {"broker": 9180, "auth": 9181, "logger": 9182, "mail": 9183, "frontend": 9184,
                 "listener": 9185}
SOCKETS = {
    "broker": ["switchboard-broker.socket", "switchboard-broker-metrics.socket"],
    "auth": ["switchboard-auth.socket", "switchboard-auth-metrics.socket"],
    "mail": ["switchboard-mail.socket", "switchboard-mail-metrics.socket"],
    "frontend": ["switchboard-frontend.socket", "switchboard-frontend-metrics.socket"],
    "logger": [
        "switchboard-logger-http.socket",
        "switchboard-logger-rpc.socket",
        "switchboard-logger-grpc.socket",
        "switchboard-logger-metrics.socket",
    ],
    "listener": ["switchboard-listener-metrics.socket"],
}
# A metric every service's door serves (the process collector's).
METRICS_PROBE = "process_resident_memory_bytes"
# systemd-analyze security targets (the issue's): every service <= 1.0, the
# front-end, which has no network, <= 0.5.
SCORE_TARGET = {s: 1.0 for s in SERVICES} | {"frontend": 0.5}
DEPENDENCIES = ["postgresql.service", "rabbitmq-server.service", "ferretdb.service", "mailhog.service"]
DEV_USER = ("admin@example.com", "verysecret")
# The README's PostgreSQL DSN for a local server: unix socket, peer authentication.
DSN = "postgres:///users?host=/run/postgresql"
# systemd's dynamic users come from this range (systemd.exec(5), DynamicUser=).
DYNAMIC_UID_RANGE = range(61184, 65520)
RUN_ID = uuid.uuid4().hex[:8]
# An address nothing may reach but an unsandboxed process (TEST-NET-1).
FOREIGN_ADDR, FOREIGN_PORT = "192.0.2.1", 7777

started = time.monotonic()
results = []
suspect_units = set()


def unit(service):
    return f"switchboard-{service}.service"


def log(message):
    print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)


class Abort(Exception):
    """A failure after which the remaining checks cannot mean anything."""


class check:
    """Records one named check; any exception inside fails it (and, if
    critical, ends the run) and marks the given units for a journal dump."""

    def __init__(self, name, units=(), critical=False):
        self.name, self.units, self.critical = name, list(units), critical

    def __enter__(self):
        self.t0 = time.monotonic()
        log(f"check: {self.name}")
        return self

    def __exit__(self, exc_type, exc, tb):
        took = time.monotonic() - self.t0
        if exc_type is None:
            results.append(("PASS", self.name, f"{took:.1f}s"))
            return False
        detail = str(exc) if isinstance(exc, AssertionError) else "".join(
            traceback.format_exception_only(exc_type, exc)).strip()
        results.append(("FAIL", self.name, detail.replace("\n", " | ")))
        log(f"FAIL {self.name}: {detail}")
        suspect_units.update(self.units)
        if self.critical:
            raise Abort(self.name)
        return True


def run(*args, input=None, timeout=60, check_rc=True, env=None):
    proc = subprocess.run(list(args), input=input, capture_output=True, text=True,
                          timeout=timeout, env=env)
    if check_rc and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}: "
                             f"{(proc.stderr or proc.stdout).strip()[-600:]}")
    return proc


def systemctl(*args, **kw):
    return run("systemctl", "--no-pager", *args, **kw)


def show(unit_name, *props):
    out = systemctl("show", unit_name, *[f"-p{p}" for p in props]).stdout
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return values if len(props) != 1 else values.get(props[0], "")


def wait_for(what, predicate, timeout=20.0, interval=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def request(method, port, path, body=None, headers=None, timeout=15.0):
    """One HTTP request on a fresh connection; returns (status, parsed JSON or text, headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Connection": "close", **(headers or {})}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read().decode("utf-8", "replace")
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw
        return resp.status, parsed, dict(resp.getheaders())
    finally:
        conn.close()


def expect(status, body, want_status, context):
    assert status == want_status, f"{context}: HTTP {status}, want {want_status}: {str(body)[:300]}"
    if isinstance(body, dict) and "error" in body:
        assert body["error"] is (want_status >= 400), f"{context}: error flag wrong: {body}"
    return body


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def dump_journals():
    units = set(suspect_units)
    # Failed units are always worth a look.
    failed = systemctl("list-units", "--failed", "--plain", "--no-legend", check_rc=False).stdout
    units.update(line.split()[0] for line in failed.splitlines() if line.strip())
    for u in sorted(units):
        text = run("journalctl", "--no-pager", "-o", "short-monotonic", "-u", u, check_rc=False).stdout
        write(f"{OUT}/journal-{u}.log", text)
    full = run("journalctl", "--no-pager", "-o", "short-monotonic", "-b", check_rc=False).stdout
    write(f"{OUT}/full-journal.txt", full)


# --------------------------------------------------------------------------
# Set-up: a host as a distribution leaves it, then scripts/install.
# --------------------------------------------------------------------------

def prepare_host():
    # /etc starts empty in a volatile container. nss-systemd resolves the
    # dynamic users (PostgreSQL peer authentication needs the name of the
    # connecting uid), as on a stock Debian.
    write("/etc/nsswitch.conf", "passwd: files systemd\ngroup: files systemd\n"
          "shadow: files\nhosts: files myhostname\n")
    # The system users the host's packages declare (root, messagebus for the
    # D-Bus that systemd-run needs, ...), as on a freshly installed system.
    run("systemd-sysusers")
    write("/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n")
    for dep in DEPENDENCIES:
        shutil.copy(f"/probe/units/{dep}", f"/etc/systemd/system/{dep}")
    # RabbitMQ needs ~5 s: start it now, overlapping the rest of the set-up.
    systemctl("daemon-reload")
    systemctl("start", "--no-block", "rabbitmq-server.service")


def install():
    # An operator's edited configuration must survive a re-install.
    marker = f"# edited by the operator {RUN_ID}\n"
    with open("/config/listener.toml") as f:
        write("/etc/switchboard/listener.toml", f.read() + marker)
    out = run(f"/src/scripts/install", "--from", "/build", "--prefix", PREFIX,
              "--config-from", "/config").stdout
    log(out.strip())
    with open("/etc/switchboard/listener.toml") as f:
        assert marker in f.read(), "install overwrote the existing listener.toml"
    assert "kept existing listener.toml" in out, f"install did not report the kept file: {out}"
    for s in SERVICES:
        assert os.access(f"{BINDIR}/switchboard-{s}", os.X_OK), f"{BINDIR}/switchboard-{s} not installed"
        assert os.path.exists(f"/etc/switchboard/{s}.toml"), f"/etc/switchboard/{s}.toml not installed"
        with open(f"/etc/systemd/system/{unit(s)}") as f:
            assert f"ExecStart={BINDIR}/switchboard-{s} --config /etc/switchboard/{s}.toml" in f.read()
        for sock in SOCKETS[s]:
            assert os.path.exists(f"/etc/systemd/system/{sock}"), f"{sock} not installed"
    # PostgreSQL's unix socket with peer authentication as the service's
    # dynamic user (role "switchboard-auth"), set the way an operator would, in a
    # drop-in. The role is named explicitly here; check_readme_dsn covers the
    # README's form, which leaves it to the client library. A low bcrypt cost
    # keeps debug builds quick.
    write("/etc/systemd/system/switchboard-auth.service.d/50-system-test.conf",
          "[Service]\n"
          f"Environment=SWITCHBOARD_AUTH__DATABASE__URL={DSN}&user=switchboard-auth\n"
          "Environment=SWITCHBOARD_AUTH__SECURITY__BCRYPT_COST=4\n")
    systemctl("daemon-reload")


def create_database():
    systemctl("start", "postgresql.service")
    uid = run("id", "-u", "postgres").stdout.strip()
    gid = run("id", "-g", "postgres").stdout.strip()
    run("setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--",
        "psql", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql", "-U", "postgres",
        "-d", "postgres", "-c", 'CREATE ROLE "switchboard-auth" LOGIN',
        "-c", 'CREATE DATABASE users OWNER "switchboard-auth"')


# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------

def check_target_and_lazy_start():
    systemctl("start", "switchboard.target", timeout=120)
    assert show("switchboard.target", "ActiveState") == "active"
    for sockets in SOCKETS.values():
        for s in sockets:
            state = show(s, "ActiveState", "SubState")
            # The listener runs from the start (the target starts it), so
            # its socket is already handed over: "running", not "listening".
            expected = {"listening", "running"} if s == "switchboard-listener-metrics.socket" else {"listening"}
            assert state["ActiveState"] == "active" and state["SubState"] in expected, f"{s}: {state}"
    listener = show(unit("listener"), "ActiveState", "Type")
    assert listener == {"ActiveState": "active", "Type": "notify"}, f"listener: {listener}"
    # Nobody has connected yet: every socket-activated service is still down
    # (the logger may already run: the listener talks to it at start).
    for s in ["broker", "auth", "mail", "frontend"]:
        state = show(unit(s), "ActiveState")
        assert state == "inactive", f"{unit(s)} is {state} before its first connection"


def check_activation_and_readiness(service, first_request):
    """The first connection starts the service; the request waits in the
    socket's backlog and is answered; the unit is active (READY=1 seen)."""
    before = show(unit(service), "ActiveState")
    status, body, _ = first_request()
    props = show(unit(service), "ActiveState", "SubState", "Type", "NotifyAccess", "MainPID",
                 "NRestarts", "WatchdogUSec")
    assert props["Type"] == "notify" and props["NotifyAccess"] == "main", props
    assert props["ActiveState"] == "active" and props["SubState"] == "running", props
    assert props["WatchdogUSec"] == "30s", props
    return before, status, body, props


def check_readyz(service):
    if service == "frontend":
        status, body, _ = request("GET", PORTS[service], "/healthz")
    else:
        status, body, _ = request("GET", PORTS[service], "/readyz")
    assert status == 200, f"{service} /readyz right after start: {status} {body}"


def auth_oneshot(args, stdin="", env_override=None):
    """Runs the auth binary as a oneshot under the service's dynamic user (so
    peer authentication maps it to the same role) and its environment."""
    env = shlex.split(show(unit("auth"), "Environment"))
    if env_override:
        names = {a.split("=", 1)[0] for a in env_override}
        env = [a for a in env if a.split("=", 1)[0] not in names] + list(env_override)
    props = ["-p", "DynamicUser=yes", "-p", "User=switchboard-auth"]
    for assignment in env:
        props.append(f"--setenv={assignment}")
    proc = run("systemd-run", "--quiet", "--wait", "--pipe", "--collect", *props,
               f"{BINDIR}/switchboard-auth", "--config", "/etc/switchboard/auth.toml", *args,
               input=stdin, timeout=30)
    log(f"switchboard-auth {' '.join(args)}: {proc.stdout.strip()} {proc.stderr.strip()}")
    return proc.stdout


def add_dev_user():
    # The operator's way: password on stdin, never in argv or the environment.
    auth_oneshot(["user", "add", "--email", DEV_USER[0], "--first-name", "Admin",
                  "--last-name", "User"], stdin=DEV_USER[1] + "\n")
    listed = auth_oneshot(["user", "list"])
    assert DEV_USER[0] in listed, f"user list does not show the new user: {listed}"


def check_readme_dsn():
    """The README's DSN names no role: the client must use the OS user's name,
    which for a DynamicUser= service only NSS (nss-systemd) knows."""
    auth_oneshot(["user", "list"], env_override=[f"SWITCHBOARD_AUTH__DATABASE__URL={DSN}"])


def broker(body, headers=None):
    return request("POST", PORTS["broker"], "/handle", body, headers)


def logged_entries(name):
    """The newest entries (up to 1000, the logger's read cap) with this name."""
    status, body, _ = request("GET", PORTS["logger"], f"/logs?limit=1000&name={name}")
    assert status == 200, f"logger GET /logs: {status} {body}"
    entries = body.get("data", body) if isinstance(body, dict) else body
    assert isinstance(entries, list), f"logger GET /logs: unexpected body {str(body)[:200]}"
    return entries


def wait_stored(name, wanted, timeout=15.0):
    """Waits until every `data` value in `wanted` is stored under `name`;
    returns the missing ones."""
    deadline = time.monotonic() + timeout
    while True:
        missing = wanted - {e.get("data") for e in logged_entries(name)}
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.25)


def mailhog_messages(to):
    status, body, _ = request("GET", 8025, f"/api/v2/search?kind=to&query={to}")
    assert status == 200, f"MailHog search: {status}"
    return body.get("items", [])


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def in_unit(service, pid, argv, join_net=True):
    """Runs argv inside the service's cgroup (so its IPAddressDeny/Allow BPF
    programs apply) and network namespace (the front-end's is private)."""
    cgroup = show(unit(service), "ControlGroup")
    script = f'echo $$ > /sys/fs/cgroup/unified{cgroup}/cgroup.procs && exec "$@"'
    prefix = ["nsenter", f"--target={pid}", "--net"] if join_net else []
    return run("sh", "-c", script, "sh", *prefix, *argv, check_rc=False, timeout=20)


CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.0).close()
    print("connected")
except OSError as exc:
    print("blocked", type(exc).__name__, exc)
"""


def connect_from(service, pid, host, port):
    proc = in_unit(service, pid, ["/usr/bin/python3", "-c", CONNECT, host, str(port)])
    out = proc.stdout.strip()
    assert out.startswith(("connected", "blocked")), f"probe in {service} failed: {proc.stderr}"
    return out


def start_foreign_listener():
    """An interface with a TEST-NET address and a listener on it, inside the
    container's network namespace."""
    link = run("ip", "link", "add", "sbtest0", "type", "dummy", check_rc=False)
    if link.returncode != 0:
        # This kernel has no dummy driver; an empty bridge holds an address as well.
        run("ip", "link", "add", "sbtest0", "type", "bridge")
    run("ip", "addr", "add", f"{FOREIGN_ADDR}/24", "dev", "sbtest0")
    run("ip", "link", "set", "sbtest0", "up")
    server = socket.create_server((FOREIGN_ADDR, FOREIGN_PORT))

    def accept_forever():
        while True:
            conn, _ = server.accept()
            conn.close()

    threading.Thread(target=accept_forever, daemon=True).start()


LOAD_NAME = f"system-test-restart-{RUN_ID}"
# Paced so that the whole run stays under the logger's read cap of 1000 entries
# per query, which is how the check finds them all again.
LOAD_MAX, LOAD_PAUSE = 950, 0.02


def load_during_restart():
    """Posts log entries on fresh connections from four threads while the
    logger restarts; returns (statuses, errors, data sent, old pid, new pid)."""
    stop = threading.Event()
    lock = threading.Lock()
    statuses, errors, sent = {}, [], []

    def worker(n):
        i = 0
        while not stop.is_set() and sum(statuses.values()) + len(errors) < LOAD_MAX:
            data = f"{n}-{i}"
            try:
                status, body, _ = request("POST", PORTS["logger"], "/log",
                                          {"name": LOAD_NAME, "data": data})
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 202:
                        sent.append(data)
                    else:
                        errors.append(f"{status} {str(body)[:120]}")
            except OSError as exc:
                with lock:
                    errors.append(repr(exc))
            i += 1
            time.sleep(LOAD_PAUSE)

    old_pid = show(unit("logger"), "MainPID")
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    systemctl("restart", unit("logger"), timeout=60)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    return statuses, errors, sent, old_pid, show(unit("logger"), "MainPID")


def scrape(service, timeout=5.0):
    """GET /metrics on the service's metrics door: (status, Content-Type, text)."""
    conn = http.client.HTTPConnection("127.0.0.1", METRICS_PORTS[service], timeout=timeout)
    try:
        conn.request("GET", "/metrics", headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def check_metrics_door(service):
    """The running service answers its metrics door itself (systemd passed it
    the socket with its others: same MainPID before and after)."""
    pid = show(unit(service), "MainPID")
    assert pid not in ("", "0"), f"{unit(service)} is not running"
    status, content_type, text = scrape(service)
    assert status == 200, f"GET /metrics: HTTP {status}: {text[:200]}"
    assert content_type.startswith("text/plain"), f"Content-Type {content_type!r}"
    samples = [line for line in text.splitlines() if line.startswith(METRICS_PROBE)]
    assert samples, f"no {METRICS_PROBE} in: {text[:300]}"
    assert float(samples[0].split()[-1]) > 0, samples[0]
    after = show(unit(service), "MainPID")
    assert after == pid, f"MainPID {pid} -> {after}: the scrape was not served by the running process"


def security_score(service):
    out = run("systemd-analyze", "security", "--no-pager", unit(service)).stdout
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert match, f"no score in: {out[-300:]}"
    return float(match.group(1))


def main():
    os.makedirs(OUT, exist_ok=True)
    running = {}

    with check("set-up: dependency units and scripts/install", ["probe.service"], critical=True):
        prepare_host()
        install()
    with check("PostgreSQL up; role and database for switchboard-auth",
               ["postgresql.service"], critical=True):
        create_database()

    with check("switchboard.target starts; sockets listen; services wait for a connection",
               ["switchboard.target", unit("listener"), "rabbitmq-server.service"]
               + [s for ss in SOCKETS.values() for s in ss], critical=True):
        check_target_and_lazy_start()

    # --- socket activation and readiness, one service at a time ---------------
    with check("frontend: activated by its first connection, READY=1, serves the page",
               [unit("frontend")]):
        before, status, body, props = check_activation_and_readiness(
            "frontend", lambda: request("GET", PORTS["frontend"], "/"))
        assert before == "inactive", f"frontend was {before} before the first request"
        assert status == 200 and "broker" in str(body).lower(), f"GET /: {status} {str(body)[:200]}"
        check_readyz("frontend")

    with check("broker: activated by its first connection, READY=1, POST / answers",
               [unit("broker"), "rabbitmq-server.service"]):
        before, status, body, props = check_activation_and_readiness(
            "broker", lambda: request("POST", PORTS["broker"], "/"))
        assert before == "inactive", f"broker was {before} before the first request"
        expect(status, body, 200, "POST /")
        assert body == {"error": False, "message": "Hit the broker"}, body
        check_readyz("broker")

    for service, first in [
        ("auth", lambda: request("GET", PORTS["auth"], "/readyz")),
        ("mail", lambda: request("GET", PORTS["mail"], "/readyz")),
        ("logger", lambda: request("GET", PORTS["logger"], "/readyz")),
    ]:
        deps = {"auth": ["postgresql.service", "rabbitmq-server.service"],
                "mail": ["mailhog.service"], "logger": ["ferretdb.service"]}[service]
        with check(f"{service}: socket-activated, READY=1 only once its dependencies answer",
                   [unit(service), *deps]):
            _, status, body, _ = check_activation_and_readiness(service, first)
            assert status == 200, f"{service} /readyz: {status} {body}"
            for dep in deps:
                assert show(dep, "ActiveState") == "active", f"{dep} was not pulled in by Wants="

    for s in SERVICES:
        running[s] = show(unit(s), "MainPID")

    # --- the broker's paths, end to end -----------------------------------------
    with check("auth: dev user created by `switchboard-auth user add` (oneshot, password on stdin)",
               [unit("auth"), "postgresql.service"]):
        add_dev_user()

    with check("auth: the README's DSN (no role named) authenticates as the dynamic user",
               [unit("auth"), "postgresql.service"]):
        check_readme_dsn()

    with check("broker -> auth: valid login 202, wrong password 401, unknown action 400",
               [unit("broker"), unit("auth")]):
        status, body, _ = broker({"action": "auth",
                                  "auth": {"email": DEV_USER[0], "password": DEV_USER[1]}})
        expect(status, body, 202, "auth")
        assert body["message"] == "Authenticated!", body
        assert body["data"]["email"] == DEV_USER[0], body
        assert not any("password" in k for k in body["data"]), f"hash leaked: {body['data']}"
        status, body, _ = broker({"action": "auth",
                                  "auth": {"email": DEV_USER[0], "password": "wrong"}})
        expect(status, body, 401, "auth with a wrong password")
        status, body, _ = broker({"action": "dance"})
        expect(status, body, 400, "unknown action")

    vias = ["rpc", "grpc", "http", "amqp"]
    with check("broker -> logger over rpc, grpc, http, amqp (via the listener) and /log-grpc: stored",
               [unit("broker"), unit("logger"), unit("listener"), "ferretdb.service",
                "rabbitmq-server.service"]):
        wanted = {}
        for via in vias:
            data = f"via-{via}-{RUN_ID}"
            status, body, _ = broker({"action": "log",
                                      "log": {"name": "system-test", "data": data, "via": via}})
            expect(status, body, 202, f"log via {via}")
            wanted[data] = via
        data = f"default-{RUN_ID}"
        status, body, _ = broker({"action": "log", "log": {"name": "system-test", "data": data}})
        expect(status, body, 202, "log via the default transport")
        wanted[data] = "default"
        data = f"log-grpc-{RUN_ID}"
        status, body, _ = request("POST", PORTS["broker"], "/log-grpc",
                                  {"name": "system-test", "data": data})
        expect(status, body, 202, "/log-grpc")
        assert body == {"error": False, "message": "logged"}, body
        wanted[data] = "/log-grpc"
        missing = wait_stored("system-test", set(wanted))
        assert not missing, "not stored: " + ", ".join(f"{wanted[d]} ({d})" for d in missing)

    with check("auth -> logs_topic -> listener -> logger: the login event is stored",
               [unit("auth"), unit("listener"), unit("logger")]):
        missing = wait_stored("authentication", {f"{DEV_USER[0]} logged in"})
        assert not missing, "no login event in the log store"

    with check("broker -> mail -> MailHog: 202, delivered as multipart/alternative",
               [unit("broker"), unit("mail"), "mailhog.service"]):
        to = f"system-{RUN_ID}@example.com"
        status, body, _ = broker({"action": "mail", "mail": {
            "from": "probe@example.com", "to": to, "subject": f"system test {RUN_ID}",
            "message": "Hello from the system test"}})
        expect(status, body, 202, "mail")
        assert body["message"] == f"Message sent to {to}", body
        items = wait_for("the message in MailHog", lambda: mailhog_messages(to), timeout=10)
        headers = items[0]["Content"]["Headers"]
        content_type = " ".join(headers.get("Content-Type", []))
        assert "multipart/alternative" in content_type, f"Content-Type: {content_type}"

    with check("journald: the broker's entries carry the request id as REQUEST_ID",
               [unit("broker")]):
        rid = f"system-test-{RUN_ID}"
        status, body, _ = request("POST", PORTS["broker"], "/handle",
                                  {"action": "log", "log": {"name": "system-test", "data": rid}},
                                  {"X-Request-Id": rid})
        expect(status, body, 202, "log with a request id")

        def entries():
            out = run("journalctl", "--no-pager", "-o", "json", "-u", unit("broker"),
                      f"REQUEST_ID={rid}").stdout
            return [json.loads(line) for line in out.splitlines() if line.strip()]

        found = wait_for("a journal entry with REQUEST_ID", entries, timeout=5)
        assert found[0].get("_SYSTEMD_UNIT") == unit("broker"), found[0]

    with check("journald: one login is one trace, TRACE_ID in the broker's and auth's entries",
               [unit("broker"), unit("auth")]):
        trace_id = uuid.uuid4().hex
        status, body, _ = request("POST", PORTS["broker"], "/handle",
                                  {"action": "auth",
                                   "auth": {"email": DEV_USER[0], "password": DEV_USER[1]}},
                                  {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
        expect(status, body, 202, "login with a traceparent")

        def traced_units():
            out = run("journalctl", "--no-pager", "-o", "json", f"TRACE_ID={trace_id}").stdout
            units = {json.loads(line).get("_SYSTEMD_UNIT") for line in out.splitlines() if line.strip()}
            return units if {unit("broker"), unit("auth")} <= units else None

        wait_for("journal entries of both units with TRACE_ID", traced_units, timeout=5)

    # --- metrics doors ---------------------------------------------------------------
    for service in SERVICES:
        with check(f"{service}: metrics door answers GET /metrics with {METRICS_PROBE}",
                   [unit(service), f"switchboard-{service}-metrics.socket"]):
            check_metrics_door(service)

    with check("a scrape of a stopped service's metrics socket starts it (mail)",
               [unit("mail"), "switchboard-mail-metrics.socket"]):
        systemctl("stop", unit("mail"))
        assert show(unit("mail"), "ActiveState") == "inactive", show(unit("mail"), "ActiveState")
        assert show("switchboard-mail-metrics.socket", "SubState") == "listening"
        status, _, text = scrape("mail", timeout=30.0)
        assert status == 200 and METRICS_PROBE in text, f"GET /metrics: HTTP {status}: {text[:200]}"
        assert show(unit("mail"), "ActiveState") == "active", "mail was not started by its metrics socket"

    # --- restart under load -------------------------------------------------------
    with check("logger restart under load: no request refused or lost (the socket stays open)",
               [unit("logger")] + SOCKETS["logger"]):
        statuses, errors, sent, old_pid, new_pid = load_during_restart()
        log(f"restart under load: {statuses}, {len(errors)} errors, pid {old_pid} -> {new_pid}")
        assert new_pid != old_pid and new_pid != "0", f"logger did not restart ({old_pid} -> {new_pid})"
        assert not errors, f"{len(errors)} failed requests, e.g. {errors[:3]} (statuses {statuses})"
        assert len(sent) > 20, f"only {len(sent)} requests during the restart"
        assert sum(statuses.values()) + len(errors) < LOAD_MAX, "the load ended before the restart did"
        missing = wait_stored(LOAD_NAME, set(sent))
        assert not missing, f"{len(missing)} of {len(sent)} acknowledged entries not stored"
        for s in SOCKETS["logger"]:
            assert show(s, "NRefused") == "0", f"{s} refused connections"

    for s in SERVICES:
        running[s] = show(unit(s), "MainPID")

    # --- the sandbox ---------------------------------------------------------------
    for service in SERVICES:
        with check(f"{service}: dynamic user, no capabilities, read-only system, private /tmp",
                   [unit(service)]):
            pid = running[service]
            assert pid not in ("", "0"), f"{unit(service)} is not running"
            st = proc_status(pid)
            uids = [int(x) for x in st["Uid"].split()]
            assert all(u in DYNAMIC_UID_RANGE for u in uids), f"Uid {st['Uid']} not dynamic"
            for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                assert int(st[cap], 16) == 0, f"{cap}={st[cap]}"
            assert st["NoNewPrivs"] == "1", st["NoNewPrivs"]
            assert st["Seccomp"] == "2", f"Seccomp={st['Seccomp']}"
            user = run("id", "-nu", str(uids[0])).stdout.strip()
            assert user == f"switchboard-{service}", f"runs as {user}"
            probe = ("for d in / /etc /usr /var /var/lib /opt /run /root /home /srv; do "
                     "  touch $d/.sandbox-probe 2>/dev/null && echo wrote:$d; done; "
                     "touch /tmp/.sandbox-probe && echo tmp:ok; "
                     "test -e /proc/1 && echo sees:pid1; "
                     "cat /etc/shadow >/dev/null 2>&1 && echo read:shadow; true")
            gid = st["Gid"].split()[0]
            out = run("nsenter", f"--target={pid}", "--all", f"--setuid={uids[0]}",
                      f"--setgid={gid}", "/bin/sh", "-c", probe).stdout.split()
            assert out == ["tmp:ok"], f"sandbox leaks: {out}"
            assert not os.path.exists("/tmp/.sandbox-probe"), "/tmp is not private"

    scores = []
    with check("systemd-analyze security, as loaded by the manager, meets the targets",
               [unit(s) for s in SERVICES]):
        over = []
        for service in SERVICES:
            score = security_score(service)
            scores.append(f"  {unit(service):32} {score:4.1f}  (target {SCORE_TARGET[service]:.1f})")
            if score > SCORE_TARGET[service]:
                over.append(f"{service} {score} > {SCORE_TARGET[service]}")
        write(f"{OUT}/scores", "\n".join(scores) + "\n")
        assert not over, "; ".join(over)

    # --- IP allow lists ----------------------------------------------------------------
    with check("IPAddressDeny=any + IPAddressAllow=localhost hold; the front-end reaches nothing",
               [unit(s) for s in SERVICES]):
        bpf = run("journalctl", "--no-pager", "-b", "--grep", "BPF firewalling is not supported",
                  check_rc=False).stdout
        assert "not supported" not in bpf, f"IP filtering is not enforced here: {bpf.strip()}"
        start_foreign_listener()
        direct = socket.create_connection((FOREIGN_ADDR, FOREIGN_PORT), timeout=2)
        direct.close()  # an unsandboxed process does reach it
        outcomes = {}

        def attempt(service, host, port):
            outcomes[(service, host)] = connect_from(service, running[service], host, port)

        threads = [threading.Thread(target=attempt, args=(s, h, p)) for s in SERVICES
                   for h, p in ((FOREIGN_ADDR, FOREIGN_PORT), ("127.0.0.1", PORTS["broker"]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        bad = []
        for s in SERVICES:
            if not outcomes[(s, FOREIGN_ADDR)].startswith("blocked"):
                bad.append(f"{s} reached {FOREIGN_ADDR}")
            loopback = outcomes[(s, "127.0.0.1")]
            want = "blocked" if s == "frontend" else "connected"
            if not loopback.startswith(want):
                bad.append(f"{s} -> 127.0.0.1:{PORTS['broker']}: {loopback}, want {want}")
        assert not bad, "; ".join(bad)

    # --- watchdog --------------------------------------------------------------------------
    with check("watchdog: a hung service (SIGSTOP, no pings) is killed and restarted",
               [unit("mail")]):
        dropin = "/run/systemd/system/switchboard-mail.service.d/50-watchdog-test.conf"
        write(dropin, "[Service]\nWatchdogSec=2s\nTimeoutAbortSec=2s\nLimitCORE=0\n")
        try:
            systemctl("daemon-reload")
            systemctl("restart", unit("mail"))
            pid = show(unit("mail"), "MainPID")
            restarts = int(show(unit("mail"), "NRestarts"))
            time.sleep(3)  # longer than WatchdogSec: the runtime's pings keep it alive
            assert show(unit("mail"), "MainPID") == pid, "restarted although it was pinging"
            os.kill(int(pid), 19)  # SIGSTOP: alive but silent
            wait_for("a restart by the watchdog", lambda: int(show(unit("mail"), "NRestarts")) > restarts
                     and show(unit("mail"), "ActiveState") == "active", timeout=15)
            journal = run("journalctl", "--no-pager", "-u", unit("mail"), "--grep", "atchdog").stdout
            assert "Watchdog timeout" in journal, f"no watchdog timeout in the journal: {journal}"
        finally:
            os.remove(dropin)
            systemctl("daemon-reload")

    # --- clean stop ----------------------------------------------------------------------------
    with check("systemctl stop switchboard.target: every unit stops cleanly, no panic in the journal",
               [unit(s) for s in SERVICES]):
        systemctl("stop", "switchboard.target", timeout=90)
        # The target's stop job does not wait for the services (PartOf= only
        # propagates the stop); they drain for up to shutdown_timeout_ms.
        wait_for("every service to stop", lambda: all(
            show(unit(s), "ActiveState") in ("inactive", "failed") for s in SERVICES), timeout=30)
        bad = []
        for s in SERVICES:
            props = show(unit(s), "ActiveState", "Result")
            if props != {"ActiveState": "inactive", "Result": "success"}:
                bad.append(f"{s}: {props}")
        for sockets in SOCKETS.values():
            for so in sockets:
                if show(so, "ActiveState") != "inactive":
                    bad.append(f"{so} still {show(so, 'ActiveState')}")
        panics = run("journalctl", "--no-pager", "-b", "--grep", "panicked at",
                     *[f"--unit={unit(s)}" for s in SERVICES], check_rc=False).stdout
        if "panicked" in panics:
            bad.append(f"panic: {panics.strip()[:300]}")
        assert not bad, "; ".join(bad)


if __name__ == "__main__":
    code = 0
    try:
        main()
    except Abort as exc:
        results.append(("FAIL", "aborted: the remaining checks need the failed step", str(exc)))
    except Exception:  # noqa: BLE001 - a probe bug must still end the container
        results.append(("FAIL", "probe error", traceback.format_exc().replace("\n", " | ")))
    finally:
        failed = [r for r in results if r[0] == "FAIL"]
        code = 1 if failed else 0
        with open(f"{OUT}/results", "w") as f:
            for status, name, detail in results:
                f.write(f"{status} {name}" + (f"  ({detail})" if detail else "") + "\n")
            f.write(f"{len(results) - len(failed)} passed, {len(failed)} failed "
                    f"in {time.monotonic() - started:.1f}s inside the container\n")
        if failed:
            try:
                dump_journals()
            except Exception:  # noqa: BLE001
                traceback.print_exc()
    sys.exit(code)
