#!/usr/bin/env python3
"""Evaluation cases for nixos/module.nix, run through the stand-in evaluator.

Each case evaluates the module with one configuration (stub-eval.nix: nixpkgs'
real module system and lib, typed stand-ins for the NixOS options) and checks
what it configures: units and drop-ins, dependency servers, /etc files,
firewall, assertions and warnings. A case either evaluates and passes its
checks, or is expected to fail an assertion whose message it names.

Usage: module_cases.py NIXPKGS_LIB   (the lib/ directory of nixpkgs, or its parent)
Exit status: 0 all cases pass, 1 a case failed, 2 setup problem.
"""

import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE = os.path.normpath(os.path.join(HERE, "..", "..", "module.nix"))
EVALUATOR = os.path.join(HERE, "stub-eval.nix")
# Options of nixpkgs the module sets that the shared stand-in does not declare.
EXTRA_OPTIONS = os.path.join(HERE, "extra-options.nix")

SERVICES = ["broker", "auth", "logger", "mail", "listener", "frontend"]
SOCKETS = {
    "switchboard-broker": "127.0.0.1:8080",
    "switchboard-auth": "127.0.0.1:8081",
    "switchboard-logger-http": "127.0.0.1:8082",
    "switchboard-logger-rpc": "127.0.0.1:5001",
    "switchboard-logger-grpc": "127.0.0.1:50001",
    "switchboard-mail": "127.0.0.1:8083",
    "switchboard-frontend": "127.0.0.1:8084",
    # Every service's metrics door, the listener's only socket.
    "switchboard-broker-metrics": "127.0.0.1:9180",
    "switchboard-auth-metrics": "127.0.0.1:9181",
    "switchboard-logger-metrics": "127.0.0.1:9182",
    "switchboard-mail-metrics": "127.0.0.1:9183",
    "switchboard-frontend-metrics": "127.0.0.1:9184",
    "switchboard-listener-metrics": "127.0.0.1:9185",
}
METRICS_PORTS = {"broker": 9180, "auth": 9181, "logger": 9182, "mail": 9183, "frontend": 9184, "listener": 9185}
# Enough for every service to evaluate without local dependency servers.
EXTERNAL = """
  services.switchboard.postgresql.createLocally = false;
  services.switchboard.mongodb.createLocally = false;
  services.switchboard.rabbitmq.createLocally = false;
  services.switchboard.auth.settings.database.url = "postgres://switchboard@10.0.0.5:5432/switchboard";
  services.switchboard.auth.settings.events.amqp_url = "amqp://switchboard:pw@10.0.0.5:5672/%2f";
  services.switchboard.broker.settings.events.amqp_url = "amqp://switchboard:pw@10.0.0.5:5672/%2f";
  services.switchboard.listener.settings.amqp.url = "amqp://switchboard:pw@10.0.0.5:5672/%2f";
  services.switchboard.logger.settings.mongodb.url = "mongodb://10.0.0.5:27017";
  services.switchboard.mail.settings.smtp.host = "smtp.example.com";
"""


class Case:
    def __init__(self, lib, tmp):
        self.lib = lib
        self.tmp = tmp
        self.problems = []

    def evaluate(self, config, fatal=True, enable=True):
        """Evaluate the module with CONFIG (Nix attribute set body); returns (ok, json-or-stderr)."""
        switch = "true" if enable else "false"
        cmd = [
            "nix-instantiate", "--eval", "--strict", "--json", EVALUATOR,
            "--arg", "lib", f"import {self.lib}",
            "--arg", "module", MODULE,
            "--arg", "config", f"{{ services.switchboard.enable = {switch};\n" + config + "\n}",
            "--arg", "extraModules", f"[ {EXTRA_OPTIONS} ]",
        ]
        if not fatal:
            cmd += ["--arg", "assertionsFatal", "false"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.tmp)
        if proc.returncode != 0:
            return False, proc.stderr
        return True, json.loads(proc.stdout)

    def evaluate_module(self, text, fatal=True, config="{ }"):
        """Evaluate TEXT, a whole NixOS module (e.g. a README example), beside CONFIG (by default nothing)."""
        path = os.path.join(self.tmp, "example.nix")
        with open(path, "w") as f:
            f.write(text)
        cmd = [
            "nix-instantiate", "--eval", "--strict", "--json", EVALUATOR,
            "--arg", "lib", f"import {self.lib}",
            "--arg", "module", MODULE,
            "--arg", "config", config,
            "--arg", "extraModules", f"[ {path} {EXTRA_OPTIONS} ]",
        ]
        if not fatal:
            cmd += ["--arg", "assertionsFatal", "false"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.tmp)
        if proc.returncode != 0:
            return False, proc.stderr
        return True, json.loads(proc.stdout)

    def check(self, condition, what):
        if not condition:
            self.problems.append(what)


def units(out, kind):
    return out["systemd"][kind]


def service(out, name):
    return out["systemd"]["services"][f"switchboard-{name}"]


def enabled_services(out):
    """The services the node runs: the stand-in evaluator leaves out the
    dependency servers it stands in for when they are off, but lists the
    options of extra-options.nix's (prometheus, grafana) either way."""
    return sorted(n for n, s in out["services"].items() if n == "switchboard" or s.get("enable", True))


def case_defaults(c):
    """Everything on one host, dependencies created locally, MailHog for mail."""
    ok, out = c.evaluate("services.switchboard.mailhog.createLocally = true;")
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    s = out["systemd"]
    c.check(s["packages"] == [out["switchboard"]["package"]], "systemd.packages is the package")
    c.check(s["targets"]["switchboard"]["wantedBy"] == ["multi-user.target"], "switchboard.target wanted by multi-user.target")
    for unit, addr in SOCKETS.items():
        sock = s["sockets"].get(unit)
        c.check(sock is not None and sock["listenStreams"] == ["", addr], f"{unit}.socket: ListenStream reset, then {addr}")
        c.check(sock is not None and sock["wantedBy"] == ["switchboard.target"], f"{unit}.socket wanted by switchboard.target")
    for name in SERVICES:
        svc = service(out, name)
        c.check(svc["enable"], f"{name} enabled")
        wanted = ["switchboard.target"] if name == "listener" else []
        c.check(svc["wantedBy"] == wanted, f"{name}.service wantedBy {wanted} (socket-activated ones start on demand)")
        c.check("IPAddressAllow" not in svc["serviceConfig"], f"{name}: no IPAddressAllow drop-in on a single host")
        c.check("LoadCredential" not in svc["serviceConfig"], f"{name}: no credential drop-in without a password file")
        c.check(svc["restartTriggers"] != [], f"{name}: restarts when its settings change")
        c.check(f"switchboard/{name}.toml" in out["environment"]["etc"], f"/etc/switchboard/{name}.toml")
    c.check(service(out, "auth")["requires"] == ["postgresql.target", "rabbitmq.service"], "auth requires postgresql.target and rabbitmq")
    c.check(service(out, "auth")["after"] == ["postgresql.target", "rabbitmq.service"], "auth after postgresql.target and rabbitmq")
    c.check(service(out, "logger")["requires"] == ["ferretdb.service"], "logger requires ferretdb (the free default)")
    c.check(service(out, "mail")["requires"] == ["mailhog.service"], "mail requires mailhog")
    c.check(service(out, "broker")["requires"] == ["rabbitmq.service"], "broker requires rabbitmq")
    c.check(service(out, "listener")["requires"] == ["rabbitmq.service"], "listener requires rabbitmq")
    c.check(service(out, "frontend")["requires"] == [], "frontend has no dependency")
    svcs = out["services"]
    c.check(svcs["postgresql"]["ensureDatabases"] == ["switchboard-auth"], "database switchboard-auth")
    c.check(svcs["postgresql"]["ensureUsers"] == [{"name": "switchboard-auth", "ensureDBOwnership": True, "ensureClauses": {}}],
            "role switchboard-auth owning its database")
    c.check("mongodb" not in svcs and "ferretdb" in svcs, "FerretDB by default: no unfree package needed")
    ferretdb = out["systemd"]["services"].get("ferretdb", {})
    c.check("/dev/tcp/127.0.0.1/27017" in ferretdb.get("postStart", ""), "ferretdb.service waits for its port before it counts as started")
    c.check(svcs["mailhog"].get("setSendmail") is False, "MailHog leaves the host's sendmail alone")
    c.check("rabbitmq" in svcs and "mailhog" in svcs, "rabbitmq and mailhog enabled")
    sb = out["switchboard"]
    c.check(sb["auth"]["settings"]["database"]["url"] == "postgres:///switchboard-auth?host=/run/postgresql&port=5432&user=switchboard-auth",
            "auth uses peer authentication over the unix socket")
    c.check(sb["broker"]["settings"]["downstream"] == {
        "auth_url": "http://127.0.0.1:8081", "mail_url": "http://127.0.0.1:8083",
        "logger_http_url": "http://127.0.0.1:8082", "logger_rpc_addr": "127.0.0.1:5001",
        "logger_grpc_url": "http://127.0.0.1:50001"}, "broker downstream addresses")
    c.check(sb["listener"]["settings"]["logger"]["rpc_addr"] == "127.0.0.1:5001", "listener finds the logger")
    c.check(sb["listener"]["settings"]["listen"] == {"metrics": "127.0.0.1:9185"}, "listener: only its metrics door in listen")
    c.check(sb["mail"]["settings"]["smtp"] == {"host": "127.0.0.1", "port": 1025}, "mail goes to MailHog")
    c.check(sb["logger"]["settings"]["listen"] == {"http": "127.0.0.1:8082", "rpc": "127.0.0.1:5001", "grpc": "127.0.0.1:50001",
                                                   "metrics": "127.0.0.1:9182"},
            "logger listen settings")
    for name, port in METRICS_PORTS.items():
        c.check(sb[name]["settings"]["listen"].get("metrics") == f"127.0.0.1:{port}", f"{name}: listen.metrics 127.0.0.1:{port}")
    c.check(out["services"]["prometheus"]["scrapeConfigs"] == [], "no scrape jobs unless asked for")
    c.check(out["services"]["grafana"]["provision"]["dashboards"]["settings"] is None, "no dashboard unless asked for")
    c.check(out["networking"]["firewall"]["allowedTCPPorts"] == [], "firewall stays closed")
    c.check(out["warnings"] == [] and out["failedAssertions"] == [], "no warnings, no failed assertions")


def case_mail_needs_smtp(c):
    """Defaults without MailHog: mail has no SMTP server, which is an assertion."""
    ok, out = c.evaluate("", fatal=False)
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    c.check(any("smtp.host" in m and "mailhog.createLocally" in m for m in out["failedAssertions"]),
            f"assertion about the SMTP server, got {out['failedAssertions']}")
    ok, err = c.evaluate("")
    c.check(not ok and "Failed assertions" in err and "services.switchboard.mail: has no SMTP server" in err,
            "fatal evaluation names the mail service")


def case_only_logger(c):
    """Every service disabled but the logger."""
    off = "".join(f"services.switchboard.{n}.enable = false;\n" for n in SERVICES if n != "logger")
    ok, out = c.evaluate(off)
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    s = out["systemd"]
    for name in SERVICES:
        c.check(service(out, name)["enable"] == (name == "logger"), f"{name}.service {'enabled' if name == 'logger' else 'masked'}")
    for unit in SOCKETS:
        want = unit.startswith("switchboard-logger")
        c.check(s["sockets"][unit]["enable"] == want, f"{unit}.socket {'enabled' if want else 'masked'}")
    c.check(list(out["environment"]["etc"]) == ["switchboard/logger.toml"], "only logger.toml in /etc")
    svcs = out["services"]
    c.check("ferretdb" in svcs, "FerretDB for the logger")
    for dep in ["postgresql", "rabbitmq", "mailhog"]:
        c.check(dep not in svcs, f"no {dep} without a service that needs it")
    c.check(out["failedAssertions"] == [], "no failed assertions")


def case_external(c):
    """Dependencies on another host, broker exposed, credentials from files."""
    ok, out = c.evaluate(EXTERNAL + """
  services.switchboard.ipAddressAllow = [ "10.0.0.5" ];
  services.switchboard.mail.ipAddressAllow = [ "192.0.2.25" ];
  services.switchboard.auth.databasePasswordFile = "/run/keys/switchboard-db";
  services.switchboard.mail.smtpPasswordFile = "/run/keys/smtp";
  services.switchboard.broker.listen.http.address = "0.0.0.0";
  services.switchboard.broker.openFirewall = true;
""")
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    svcs = out["services"]
    for dep in ["postgresql", "mongodb", "ferretdb", "rabbitmq", "mailhog"]:
        c.check(dep not in svcs, f"no local {dep}")
    for name in SERVICES:
        svc = service(out, name)
        c.check(svc["requires"] == [] and svc["after"] == [], f"{name}: no ordering on local dependencies")
        allow = svc["serviceConfig"].get("IPAddressAllow")
        want = None if name == "frontend" else (["10.0.0.5", "192.0.2.25"] if name == "mail" else ["10.0.0.5"])
        c.check(allow == want, f"{name}: IPAddressAllow {want}, got {allow}")
        c.check("IPAddressDeny" not in svc["serviceConfig"], f"{name}: IPAddressDeny of the shipped unit untouched")
    c.check(service(out, "auth")["serviceConfig"].get("LoadCredential") ==
            ["", "amqp-password:switchboard-amqp-password", "db-password:/run/keys/switchboard-db"],
            "auth: credential db-password from the file (reset first, the other credential's default kept)")
    c.check(service(out, "mail")["serviceConfig"].get("LoadCredential") == ["", "smtp-password:/run/keys/smtp"],
            "mail: credential smtp-password from the file (reset first)")
    text = service(out, "auth")["unitText"]
    c.check("LoadCredential=\nLoadCredential=amqp-password:switchboard-amqp-password\nLoadCredential=db-password:/run/keys/switchboard-db\n" in text,
            "auth drop-in text resets LoadCredential")
    c.check(out["systemd"]["sockets"]["switchboard-broker"]["listenStreams"] == ["", "0.0.0.0:8080"], "broker listens on all addresses")
    c.check(out["switchboard"]["frontend"]["settings"]["page"]["broker_url"] == "http://127.0.0.1:8080",
            "front-end's broker URL uses a connectable address")
    c.check(out["networking"]["firewall"]["allowedTCPPorts"] == [8080], "only the broker's port is open")
    c.check(out["switchboard"]["auth"]["settings"]["database"]["url"].startswith("postgres://switchboard@10.0.0.5"),
            "explicit database URL kept")
    c.check(out["failedAssertions"] == [] and out["warnings"] == [], "no failed assertions, no warnings")


def case_ferretdb(c):
    """FerretDB instead of MongoDB for a fully free system."""
    ok, out = c.evaluate("services.switchboard.mailhog.createLocally = true;\nservices.switchboard.mongodb.server = \"ferretdb\";")
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    svcs = out["services"]
    c.check("ferretdb" in svcs and "mongodb" not in svcs, "ferretdb instead of mongodb")
    c.check(svcs.get("ferretdb", {}).get("settings", {}).get("FERRETDB_LISTEN_ADDR") == "127.0.0.1:27017", "ferretdb on 127.0.0.1:27017")
    c.check(service(out, "logger")["requires"] == ["ferretdb.service"], "logger requires ferretdb.service")
    c.check(out["switchboard"]["logger"]["settings"]["mongodb"]["url"] == "mongodb://127.0.0.1:27017", "logger URL")



def case_ferretdb_postgresql(c):
    """FerretDB's pg handler on the local PostgreSQL: its database, its role, its ordering."""
    ok, out = c.evaluate("services.switchboard.mailhog.createLocally = true;\n"
                         "services.switchboard.mongodb.ferretdbBackend = \"postgresql\";")
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    svcs = out["services"]
    settings = svcs.get("ferretdb", {}).get("settings", {})
    c.check(settings.get("FERRETDB_HANDLER") == "pg", "ferretdb runs the pg handler")
    c.check(settings.get("FERRETDB_POSTGRESQL_URL") == "postgres://ferretdb@localhost:5432/ferretdb?host=/run/postgresql",
            "ferretdb reaches PostgreSQL over its socket as the role ferretdb")
    c.check(sorted(svcs["postgresql"]["ensureDatabases"]) == ["ferretdb", "switchboard-auth"], "databases ferretdb and switchboard-auth")
    c.check({"name": "ferretdb", "ensureDBOwnership": True, "ensureClauses": {}} in svcs["postgresql"]["ensureUsers"],
            "role ferretdb owns its database")
    ferretdb = out["systemd"]["services"].get("ferretdb", {})
    c.check("postgresql.target" in ferretdb.get("after", []) and "postgresql.target" in ferretdb.get("requires", []),
            "ferretdb.service after and requiring postgresql.target")
    ok, out = c.evaluate("services.switchboard.mailhog.createLocally = true;\n"
                         "services.switchboard.mongodb.ferretdbBackend = \"sqlite-normal\";")
    if not ok:
        return c.check(False, "sqlite-normal should evaluate:\n" + out)
    settings = out["services"].get("ferretdb", {}).get("settings", {})
    c.check(settings.get("FERRETDB_SQLITE_URL") == "file:/var/lib/ferretdb/?_pragma=synchronous(normal)",
            "sqlite-normal: SQLite without fsync on commit")
    c.check(settings.get("FERRETDB_HANDLER", "sqlite") == "sqlite", "sqlite-normal keeps nixpkgs' handler (sqlite)")

def case_missing_dependencies(c):
    """Local dependency servers off and no addresses: one assertion per service and dependency."""
    ok, out = c.evaluate("""
  services.switchboard.postgresql.createLocally = false;
  services.switchboard.mongodb.createLocally = false;
  services.switchboard.rabbitmq.createLocally = false;
  services.switchboard.mail.settings.smtp.host = "smtp.example.com";
  services.switchboard.mail.ipAddressAllow = [ "203.0.113.0/24" ];
""", fatal=False)
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    failed = out["failedAssertions"]
    for expected in ["auth: has no PostgreSQL", "auth: has no RabbitMQ", "broker: has no RabbitMQ",
                     "listener: has no RabbitMQ", "logger: has no MongoDB"]:
        c.check(any(expected in m for m in failed), f"assertion '{expected}', got {failed}")
    c.check(len(failed) == 5, f"exactly 5 failed assertions, got {len(failed)}")


def case_broker_alone(c):
    """Broker without auth, logger and mail on this host needs their addresses."""
    off = "".join(f"services.switchboard.{n}.enable = false;\n" for n in ["auth", "logger", "mail", "listener"])
    ok, out = c.evaluate(off, fatal=False)
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    failed = out["failedAssertions"]
    for key in ["downstream.auth_url", "downstream.mail_url", "downstream.logger_http_url"]:
        c.check(any(key in m for m in failed), f"assertion naming {key}, got {failed}")
    ok, out = c.evaluate(off + """
  services.switchboard.broker.settings.downstream = {
    auth_url = "http://10.0.0.2:8081"; mail_url = "http://10.0.0.2:8083";
    logger_http_url = "http://10.0.0.3:8082"; logger_rpc_addr = "10.0.0.3:5001"; logger_grpc_url = "http://10.0.0.3:50001";
  };
""")
    if not ok:
        return c.check(False, "with addresses it should evaluate:\n" + out)
    c.check(out["switchboard"]["broker"]["settings"]["downstream"]["auth_url"] == "http://10.0.0.2:8081", "explicit downstream kept")
    c.check(enabled_services(out) == ["epmd", "rabbitmq", "switchboard"], "only RabbitMQ for the broker")


def case_listen_addresses(c):
    """IPv6 and moved ports propagate to sockets and to the other services' settings."""
    ok, out = c.evaluate("""
  services.switchboard.mailhog.createLocally = true;
  services.switchboard.broker.listen.http = { address = "::"; port = 9090; };
  services.switchboard.logger.listen.rpc.address = "::1";
""")
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    s = out["systemd"]["sockets"]
    c.check(s["switchboard-broker"]["listenStreams"] == ["", "[::]:9090"], "IPv6 wildcard bracketed")
    c.check(s["switchboard-logger-rpc"]["listenStreams"] == ["", "[::1]:5001"], "IPv6 loopback bracketed")
    sb = out["switchboard"]
    c.check(sb["frontend"]["settings"]["page"]["broker_url"] == "http://[::1]:9090", "front-end follows the broker")
    c.check(sb["broker"]["settings"]["downstream"]["logger_rpc_addr"] == "[::1]:5001", "broker follows the logger")
    c.check(sb["broker"]["settings"]["listen"]["http"] == "[::]:9090", "broker's own listen setting")


def case_port_clash_and_warnings(c):
    ok, out = c.evaluate("""
  services.switchboard.mailhog.createLocally = true;
  services.switchboard.mail.listen.http.port = 8080;
  services.switchboard.frontend.openFirewall = true;
  services.switchboard.auth.databasePasswordFile = "relative/path";
""", fatal=False)
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    failed = out["failedAssertions"]
    c.check(any("several sockets listen on one port" in m and "mail.listen.http" in m for m in failed), f"port clash, got {failed}")
    c.check(any("must be absolute paths" in m for m in failed), f"relative password file, got {failed}")
    c.check(any("frontend.openFirewall" in w for w in out["warnings"]), f"warning for a firewall hole to a loopback socket, got {out['warnings']}")


def case_type_errors(c):
    ok, err = c.evaluate("services.switchboard.mongodb.server = \"postgres\";")
    c.check(not ok and "services.switchboard.mongodb.server" in err and "is not of type" in err, "enum of servers enforced")
    ok, err = c.evaluate("services.switchboard.broker.listen.http.port = 80800;")
    c.check(not ok and "is not of type" in err, "port range enforced")


def case_disabled(c):
    ok, out = c.evaluate("services.switchboard.mailhog.createLocally = true;", enable=False)
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    c.check(out["systemd"]["packages"] == [] and out["environment"]["etc"] == {}, "nothing configured when disabled")
    c.check(enabled_services(out) == ["switchboard"], "no dependency servers when disabled")


def case_mongodb(c):
    """MongoDB itself (unfree mongodb-ce) when asked for."""
    ok, out = c.evaluate("services.switchboard.mailhog.createLocally = true;\nservices.switchboard.mongodb.server = \"mongodb\";")
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    svcs = out["services"]
    c.check(svcs.get("mongodb", {}).get("package", "").endswith("-mongodb-ce"), "mongodb package is mongodb-ce")
    c.check("ferretdb" not in svcs, "no ferretdb")
    c.check(service(out, "logger")["requires"] == ["mongodb.service"], "logger requires mongodb.service")


# The README's production example: a remote SMTP relay by host name.
RELAY = """
  services.switchboard.mail.settings.smtp = { host = "smtp.example.com"; port = 587; encryption = "starttls"; username = "switchboard"; };
  services.switchboard.mail.smtpPasswordFile = "/run/keys/smtp-password";
"""


def case_remote_relay_needs_allow_list(c):
    """A relay named by host name: an assertion until its addresses are allowed."""
    ok, out = c.evaluate(RELAY, fatal=False)
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    failed = out["failedAssertions"]
    c.check(any('smtp.host names the host "smtp.example.com"' in m and "services.switchboard.mail.ipAddressAllow" in m
                for m in failed), f"assertion naming the host and the option, got {failed}")
    c.check(len(failed) == 1, f"only that assertion, got {failed}")
    ok, out = c.evaluate(RELAY + 'services.switchboard.mail.ipAddressAllow = [ "203.0.113.0/24" ];')
    if not ok:
        return c.check(False, "with an allow list it should evaluate:\n" + out)
    c.check(service(out, "mail")["serviceConfig"].get("IPAddressAllow") == ["203.0.113.0/24"], "mail may reach the relay's network")
    c.check(service(out, "broker")["serviceConfig"].get("IPAddressAllow") is None, "nobody else gets it")
    # A relay given by address needs nothing from the operator.
    ok, out = c.evaluate('services.switchboard.mail.settings.smtp.host = "198.51.100.7";')
    if not ok:
        return c.check(False, "a relay by address should evaluate:\n" + out)
    c.check(service(out, "mail")["serviceConfig"].get("IPAddressAllow") == ["198.51.100.7"], "relay address allowed automatically")


def case_remote_dependencies_by_address(c):
    """Dependencies given by address get their allow-list entries without being asked."""
    ok, out = c.evaluate("""
  services.switchboard.postgresql.createLocally = false;
  services.switchboard.mongodb.createLocally = false;
  services.switchboard.rabbitmq.createLocally = false;
  services.switchboard.auth.settings.database.url = "postgres://switchboard@10.0.1.1:5432,10.0.1.2:5432/switchboard?target_session_attrs=read-write";
  services.switchboard.auth.settings.events.amqp_url = "amqp://switchboard@[fd00::5]:5672/%2f";
  services.switchboard.broker.settings.events.amqp_url = "amqp://switchboard@[fd00::5]:5672/%2f";
  services.switchboard.listener.settings.amqp.url = "amqp://switchboard@[fd00::5]:5672/%2f";
  services.switchboard.logger.settings.mongodb.url = "mongodb://10.0.2.1:27017,10.0.2.2:27017/?replicaSet=rs0";
  services.switchboard.mail.settings.smtp.host = "127.0.0.1";
  services.switchboard.rabbitmq.passwordFile = "/run/keys/amqp";
  services.switchboard.logger.mongodbPasswordFile = "/run/keys/mongodb";
""")
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    allow = lambda name: service(out, name)["serviceConfig"].get("IPAddressAllow")
    c.check(allow("auth") == ["10.0.1.1", "10.0.1.2", "fd00::5"], f"auth: both database hosts and RabbitMQ, got {allow('auth')}")
    c.check(allow("logger") == ["10.0.2.1", "10.0.2.2"], f"logger: every replica-set member, got {allow('logger')}")
    c.check(allow("broker") == ["fd00::5"] and allow("listener") == ["fd00::5"], "broker and listener: RabbitMQ")
    c.check(allow("mail") is None, "mail: loopback relay, nothing added")
    for name in ["auth", "broker", "listener"]:
        c.check("amqp-password:/run/keys/amqp" in (service(out, name)["serviceConfig"].get("LoadCredential") or []),
                f"{name}: RabbitMQ password from its file")
    c.check(service(out, "logger")["serviceConfig"].get("LoadCredential") == ["", "mongodb-password:/run/keys/mongodb"],
            "logger: MongoDB password from its file")
    c.check("switchboard-rabbitmq-user" not in out["systemd"]["services"], "no user to create on a remote RabbitMQ")


def case_lan_listen_addresses(c):
    """Services on a LAN address: their clients may reach it."""
    ok, out = c.evaluate("""
  services.switchboard.mailhog.createLocally = true;
  services.switchboard.logger.listen.rpc.address = "10.0.0.5";
  services.switchboard.logger.listen.grpc.address = "10.0.0.5";
  services.switchboard.auth.listen.http.address = "0.0.0.0";
  services.switchboard.mail.listen.http.address = "10.0.0.6";
""")
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    allow = lambda name: service(out, name)["serviceConfig"].get("IPAddressAllow")
    c.check(allow("broker") == ["10.0.0.6", "10.0.0.5"], f"broker reaches the logger's and mail's addresses, got {allow('broker')}")
    c.check(allow("listener") == ["10.0.0.5"], f"listener reaches the logger's RPC address, got {allow('listener')}")
    c.check(out["switchboard"]["broker"]["settings"]["downstream"]["auth_url"] == "http://127.0.0.1:8081",
            "a wildcard listener is reached over loopback")


def case_rabbitmq_on_lan(c):
    """RabbitMQ on a LAN address: guest is refused there, so a real user with a password file."""
    config = 'services.switchboard.mailhog.createLocally = true;\nservices.rabbitmq.listenAddress = "10.0.0.5";\n'
    ok, out = c.evaluate(config, fatal=False)
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    c.check(any("refuses the guest user" in m and "services.switchboard.rabbitmq.passwordFile" in m
                for m in out["failedAssertions"]), f"assertion asking for a password file, got {out['failedAssertions']}")
    ok, out = c.evaluate(config + 'services.switchboard.rabbitmq.passwordFile = "/run/keys/amqp";')
    if not ok:
        return c.check(False, "with a password file it should evaluate:\n" + out)
    sb = out["switchboard"]
    for name, key in [("auth", ("events", "amqp_url")), ("broker", ("events", "amqp_url")), ("listener", ("amqp", "url"))]:
        url = sb[name]["settings"][key[0]][key[1]]
        c.check(url == "amqp://switchboard@10.0.0.5:5672/%2f", f"{name}: connects as the switchboard user, got {url}")
        svc = service(out, name)
        c.check("switchboard-rabbitmq-user.service" in svc["requires"] and "switchboard-rabbitmq-user.service" in svc["after"],
                f"{name}: after the user exists")
        c.check("10.0.0.5" in (svc["serviceConfig"].get("IPAddressAllow") or []), f"{name}: may reach RabbitMQ's address")
        c.check("amqp-password:/run/keys/amqp" in (svc["serviceConfig"].get("LoadCredential") or []), f"{name}: password credential")
    user = out["systemd"]["services"].get("switchboard-rabbitmq-user")
    c.check(user is not None and user["serviceConfig"].get("LoadCredential") == ["amqp-password:/run/keys/amqp"]
            and "rabbitmq.service" in user["requires"] and "add_user" in user.get("script", ""),
            "switchboard-rabbitmq-user.service creates the user from the password file")


def case_exposed_frontend(c):
    """An exposed front-end must not send browsers to their own 127.0.0.1."""
    base = 'services.switchboard.mailhog.createLocally = true;\nservices.switchboard.frontend.listen.http.address = "0.0.0.0";\n'
    ok, out = c.evaluate(base + 'services.switchboard.broker.listen.http.address = "0.0.0.0";', fatal=False)
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    c.check(any("frontend.settings.page.broker_url" in m for m in out["failedAssertions"]),
            f"assertion asking for the broker URL browsers use, got {out['failedAssertions']}")
    ok, out = c.evaluate(base + 'services.switchboard.broker.listen.http.address = "192.0.2.10";')
    if not ok:
        return c.check(False, "a broker on a fixed address should evaluate:\n" + out)
    c.check(out["switchboard"]["frontend"]["settings"]["page"]["broker_url"] == "http://192.0.2.10:8080",
            "browsers are sent to the broker's own address")
    ok, out = c.evaluate(base + 'services.switchboard.frontend.settings.page.broker_url = "https://api.example.org";')
    if not ok:
        return c.check(False, "an explicit URL should evaluate:\n" + out)
    c.check(out["switchboard"]["frontend"]["settings"]["page"]["broker_url"] == "https://api.example.org", "explicit URL kept")


def case_metrics(c):
    """Metrics doors: their sockets and settings, Prometheus scrape jobs, the Grafana dashboard, address and firewall."""
    dashboard = os.path.join(c.tmp, "dashboard.json")
    with open(dashboard, "w") as f:
        f.write('{"title": "Switchboard", "panels": []}\n')
    base = ("services.switchboard.mailhog.createLocally = true;\n"
            "services.switchboard.metrics.prometheus.enable = true;\n"
            "services.switchboard.metrics.grafana.enable = true;\n")
    custom = f"services.switchboard.metrics.grafana.dashboard = {dashboard};\n"

    # Without a Prometheus or a Grafana on this host: a warning for each.
    ok, out = c.evaluate(base + custom)
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    warned = out["warnings"]
    c.check(len(warned) == 2 and any("services.prometheus.enable is not set" in w for w in warned)
            and any("services.grafana.enable is not set" in w for w in warned),
            f"a warning each for the missing Prometheus and Grafana, got {warned}")

    # With both, as nixos/README.md's monitoring example sets them.
    example = [b for b in readme_blocks(NIXOS_README) if "services.switchboard.metrics" in b]
    c.check(len(example) == 1, f"one monitoring example in nixos/README.md, found {len(example)}")
    if not example:
        return
    ok, out = c.evaluate_module(example[0], config="{ services.switchboard.enable = true;\n" + base + custom + "}")
    if not ok:
        return c.check(False, "the README's monitoring example should evaluate:\n" + out)
    c.check(out["failedAssertions"] == [] and out["warnings"] == [], f"no assertions, no warnings: {out['failedAssertions']} {out['warnings']}")
    jobs = {j["job_name"]: j for j in out["services"]["prometheus"]["scrapeConfigs"]}
    c.check(sorted(jobs) == sorted(f"switchboard-{n}" for n in SERVICES), f"a scrape job per service, got {sorted(jobs)}")
    for name, port in METRICS_PORTS.items():
        job = jobs.get(f"switchboard-{name}", {})
        c.check(job.get("static_configs") == [{"targets": [f"127.0.0.1:{port}"], "labels": {}}],
                f"switchboard-{name} scrapes 127.0.0.1:{port}, got {job.get('static_configs')}")
        c.check(job.get("metrics_path") is None and job.get("scheme") is None,
                f"switchboard-{name}: Prometheus' defaults (http, /metrics)")
    providers = (out["services"]["grafana"]["provision"]["dashboards"]["settings"] or {}).get("providers", [])
    c.check(len(providers) == 1, f"one dashboard provider, got {providers}")
    if providers:
        p = providers[0]
        c.check(p["name"] == "switchboard" and p["type"] == "file" and p.get("folder") == "Switchboard",
                f"provider switchboard, type file, folder Switchboard: {p}")
        c.check(p["options"]["path"].startswith("/nix/store/") and p["options"]["path"].endswith("-switchboard-grafana-dashboards"),
                f"provider reads a store directory with the dashboard, got {p['options']['path']}")
    c.check(service(out, "listener")["wantedBy"] == ["switchboard.target"], "the listener still starts with the target")
    for unit in SOCKETS:
        c.check(out["systemd"]["sockets"][unit]["wantedBy"] == ["switchboard.target"], f"{unit}.socket wanted by switchboard.target")
    c.check(out["networking"]["firewall"]["allowedTCPPorts"] == [], "no metrics port opened unless asked for")

    # The project's dashboard by default: observability/grafana/switchboard.json
    # (read only when provisioned, so without the file only this evaluation fails).
    repo_dashboard = os.path.normpath(os.path.join(HERE, "..", "..", "..", "observability", "grafana", "switchboard.json"))
    ok, out = c.evaluate(base)
    if os.path.exists(repo_dashboard):
        c.check(ok, "the project's dashboard is provisioned by default:\n" + (out if not ok else ""))
    else:
        c.check(not ok and "observability/grafana/switchboard.json" in out,
                f"without the file, the default names observability/grafana/switchboard.json: {str(out)[-500:]}")

    # Another address for every door, one door moved, a service disabled, the firewall.
    ok, out = c.evaluate("""
  services.switchboard.mailhog.createLocally = true;
  services.switchboard.frontend.enable = false;
  services.switchboard.metrics = { address = "::"; openFirewall = true; prometheus.enable = true; };
  services.switchboard.auth.listen.metrics = { address = "10.0.0.7"; port = 9281; };
  services.prometheus.enable = true;
""")
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    sockets = out["systemd"]["sockets"]
    c.check(sockets["switchboard-broker-metrics"]["listenStreams"] == ["", "[::]:9180"], "metrics.address for every door")
    c.check(sockets["switchboard-auth-metrics"]["listenStreams"] == ["", "10.0.0.7:9281"], "one door moved")
    c.check(sockets["switchboard-frontend-metrics"]["enable"] is False, "a disabled service's metrics socket is masked")
    c.check(out["switchboard"]["listener"]["settings"]["listen"] == {"metrics": "[::]:9185"}, "listener's listen.metrics follows")
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in out["services"]["prometheus"]["scrapeConfigs"]}
    c.check(jobs == {"switchboard-broker": ["[::1]:9180"], "switchboard-auth": ["10.0.0.7:9281"],
                     "switchboard-logger": ["[::1]:9182"], "switchboard-mail": ["[::1]:9183"],
                     "switchboard-listener": ["[::1]:9185"]},
            f"targets as reached from this host, none for the disabled front-end: {jobs}")
    c.check(sorted(out["networking"]["firewall"]["allowedTCPPorts"]) == [9180, 9182, 9183, 9185, 9281],
            f"the enabled services' metrics ports opened, got {out['networking']['firewall']['allowedTCPPorts']}")
    c.check(out["warnings"] == [] and out["failedAssertions"] == [], f"no warnings: {out['warnings']}")

    # openFirewall on loopback doors warns; a metrics port taken twice is a clash.
    ok, out = c.evaluate("""
  services.switchboard.mailhog.createLocally = true;
  services.switchboard.metrics.openFirewall = true;
  services.switchboard.broker.listen.http.port = 9181;
""", fatal=False)
    if not ok:
        return c.check(False, "should evaluate:\n" + out)
    c.check(any("metrics.openFirewall" in w and "auth, broker, frontend, listener, logger, mail listen on loopback only" in w
                for w in out["warnings"]), f"warning for open ports to loopback doors, got {out['warnings']}")
    c.check(any("several sockets listen on one port" in m and "auth.listen.metrics (9181)" in m and "broker.listen.http (9181)" in m
                for m in out["failedAssertions"]), f"clash with a metrics port, got {out['failedAssertions']}")


README = os.path.normpath(os.path.join(HERE, "..", "..", "..", "README.md"))
NIXOS_README = os.path.normpath(os.path.join(HERE, "..", "..", "README.md"))


def readme_blocks(path):
    """The ```nix blocks of a README."""
    import re
    with open(path) as f:
        return re.findall(r"```nix\n(.*?)```", f.read(), re.S)


def readme_examples():
    """(where, text) of every NixOS configuration the READMEs show for a host."""
    found = []
    for path in [README, NIXOS_README]:
        for block in readme_blocks(path):
            if "services.switchboard = {" in block and "nixosSystem" not in block:
                found.append((os.path.relpath(path, os.path.dirname(README)), block))
    return found


def case_readme_examples(c):
    """The READMEs' host configurations evaluate as they are, without a failed assertion."""
    examples = readme_examples()
    c.check(len(examples) >= 2, f"an example in README.md and in nixos/README.md, found {len(examples)}")
    for where, text in examples:
        ok, out = c.evaluate_module(text.split("\n", 1)[1] if text.startswith("#") else text, fatal=False)
        if not ok:
            c.check(False, f"{where}: example does not evaluate:\n{out}")
            continue
        c.check(out["failedAssertions"] == [], f"{where}: example fails assertions: {out['failedAssertions']}")
        c.check(out["warnings"] == [], f"{where}: example warns: {out['warnings']}")
        mail = service(out, "mail")["serviceConfig"].get("IPAddressAllow") or []
        c.check(mail != [], f"{where}: the relay is reachable from mail (IPAddressAllow), got {mail}")


CASES = [case_readme_examples, case_defaults, case_mongodb, case_remote_relay_needs_allow_list, case_remote_dependencies_by_address,
         case_lan_listen_addresses, case_rabbitmq_on_lan, case_exposed_frontend, case_mail_needs_smtp, case_only_logger, case_external, case_ferretdb, case_ferretdb_postgresql,
         case_missing_dependencies, case_broker_alone, case_listen_addresses,
         case_port_clash_and_warnings, case_type_errors, case_disabled, case_metrics]


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-2])
        return 2
    lib = os.path.abspath(sys.argv[1])
    if os.path.isfile(os.path.join(lib, "lib", "default.nix")):
        lib = os.path.join(lib, "lib")
    if not os.path.isfile(os.path.join(lib, "default.nix")):
        print(f"no nixpkgs lib at {lib}")
        return 2
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            c = Case(lib, tmp)
            case(c)
            name = case.__name__.removeprefix("case_")
            if c.problems:
                failed += 1
                print(f"FAIL {name}: {case.__doc__ or ''}".rstrip())
                for p in c.problems:
                    print("    " + p.replace("\n", "\n    ")[:2000])
            else:
                passed += 1
                print(f"ok   {name}")
    print(f"module evaluation: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
