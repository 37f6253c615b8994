#!/usr/bin/env python3
"""Checks flake.nix's outputs as far as Nix 2.8 and no nixpkgs allow.

flake-smoke.nix evaluates the flake against nixpkgs' real lib and a stand-in
nixpkgs; this script checks the summary: outputs for both systems, the
package's build arguments and source files, its postInstall script (run
here, in bash, on the real systemd/ and config/ directories, as far as its src
holds them), the app and dev shell, the checks (each the derivation it should
be; cargo-tests' and clippy's build arguments), the formatter, the NixOS
module as the flake exports it, and every VM test: each node
evaluated through the stand-in evaluator, each test script compiled (and
linted with pyflakes as the NixOS test driver does, when pyflakes is
installed).

Usage: flake_smoke.py NIXPKGS_LIB    Exit status: 0 pass, 1 fail, 2 setup problem.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))

# Globals the NixOS test driver defines for test scripts (besides node names).
DRIVER_GLOBALS = ["start_all", "subtest", "retry", "test_script", "machines", "vlans", "driver",
                  "log", "create_machine", "run_tests", "join_all", "serial_stdout_off",
                  "serial_stdout_on", "polling_condition", "Machine", "t"]


def has(names, wanted):
    """A package named `wanted` (as nixpkgs names it: `wanted` or `wanted-<version>`) is among `names`."""
    return any(n == wanted or re.fullmatch(re.escape(wanted) + r"-[0-9].*", n) for n in names)


def emulate_post_install(script, source_files, problems):
    """Runs the package's postInstall on a copy of the unit and config folders, those of them in its src."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        out = os.path.join(tmp, "out")
        os.makedirs(src)
        for folder in ["systemd", "config"]:
            if folder in source_files and os.path.isdir(os.path.join(ROOT, folder)):
                subprocess.run(["cp", "-r", os.path.join(ROOT, folder), src], check=True)
        # stdenv's substituteInPlace with --replace-fail, for one file.
        prelude = r'''
set -euo pipefail
substituteInPlace() {
  local file=$1 flag=$2 from=$3 to=$4
  [ "$flag" = --replace-fail ] || { echo "unexpected flag $flag"; return 1; }
  grep -qF -- "$from" "$file" || { echo "substituteInPlace: pattern $from not found in $file"; return 1; }
  FROM=$from TO=$to perl -0pi -e 's/\Q$ENV{FROM}\E/$ENV{TO}/g' "$file"
}
'''
        proc = subprocess.run(["bash", "-c", prelude + script], cwd=src, env={**os.environ, "out": out},
                              capture_output=True, text=True)
        if proc.returncode != 0:
            problems.append(f"postInstall failed: {proc.stdout}{proc.stderr}")
            return
        unit_dir = os.path.join(out, "lib", "systemd", "system")
        shipped = sorted(f for f in os.listdir(os.path.join(ROOT, "systemd"))
                         if f.endswith((".service", ".socket", ".target")))
        installed = sorted(os.listdir(unit_dir)) if os.path.isdir(unit_dir) else []
        if installed != shipped:
            problems.append(f"installed units {installed} != shipped {shipped}")
        for unit in installed:
            text = open(os.path.join(unit_dir, unit)).read()
            if "@bindir@" in text:
                problems.append(f"{unit}: @bindir@ not substituted")
            if unit.endswith(".service") and f"ExecStart={out}/bin/switchboard-" not in text:
                problems.append(f"{unit}: ExecStart does not point into the package's bin/")
        examples = sorted(f for f in os.listdir(os.path.join(ROOT, "config")) if f.endswith(".toml")) \
            if os.path.isdir(os.path.join(ROOT, "config")) else []
        share = os.path.join(out, "share", "switchboard")
        got = sorted(os.listdir(share)) if os.path.isdir(share) else []
        if got != examples:
            problems.append(f"share/switchboard holds {got}, config/ has {examples}")


def lint_script(name, script, node_names, problems):
    try:
        compile(script, f"<{name} testScript>", "exec")
    except SyntaxError as error:
        problems.append(f"{name}: test script does not compile: {error}")
        return "syntax error"
    try:
        import pyflakes  # noqa: F401
    except ImportError:
        return "compiled; pyflakes not installed, lint skipped"
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(script)
    env = {**os.environ, "PYFLAKES_BUILTINS": ",".join(node_names + DRIVER_GLOBALS)}
    proc = subprocess.run([sys.executable, "-m", "pyflakes", f.name], capture_output=True, text=True, env=env)
    os.unlink(f.name)
    if proc.returncode != 0:
        problems.append(f"{name}: pyflakes: {proc.stdout}{proc.stderr}")
        return "pyflakes failed"
    return "compiled, pyflakes clean"


def main():
    if len(sys.argv) != 2:
        print("usage: flake_smoke.py NIXPKGS_LIB")
        return 2
    lib = os.path.abspath(sys.argv[1])
    if os.path.isfile(os.path.join(lib, "lib", "default.nix")):
        lib = os.path.join(lib, "lib")
    # toFile/path copies need a writable store (root, or NIX_REMOTE=dummy for parse-only tools).
    proc = subprocess.run(["nix-instantiate", "--read-write-mode", "--eval", "--strict", "--json",
                           os.path.join(HERE, "flake-smoke.nix"), "--arg", "libPath", lib],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print("FAIL flake evaluation:\n" + proc.stderr)
        print("flake smoke: 0 passed, 1 failed")
        return 1
    d = json.loads(proc.stdout)
    results = []

    def check(name, problems, detail=""):
        results.append((name, problems, detail))

    p = []
    if d["outputNames"] != ["apps", "checks", "devShells", "formatter", "nixosModules", "packages"]:
        p.append(f"outputs {d['outputNames']}")
    for kind, systems in d["systems"].items():
        if systems != ["aarch64-linux", "x86_64-linux"]:
            p.append(f"{kind} for {systems}")
    check("outputs for x86_64-linux and aarch64-linux", p)

    pkg = d["package"]
    p = []
    crates = ["broker", "auth", "logger", "mail", "listener", "frontend", "stack"]
    if sorted(pkg["cargoBuildFlags"]) != sorted(f"--package=switchboard-{c}" for c in crates):
        p.append(f"cargoBuildFlags {pkg['cargoBuildFlags']}")
    # The check phase fails in the build sandbox; the tests are checks.cargo-tests.
    if pkg["doCheck"] is not False:
        p.append(f"doCheck = false (the tests run in checks.cargo-tests), got {pkg['doCheck']}")
    if not pkg["env"].get("PROTOC", "").endswith("-protobuf/bin/protoc"):
        p.append(f"PROTOC {pkg['env'].get('PROTOC')}")
    if os.path.realpath(pkg["lockFile"]) != os.path.join(ROOT, "Cargo.lock"):
        p.append(f"cargoLock.lockFile {pkg['lockFile']}")
    if os.path.realpath(pkg["cargoDepsLockFile"]) != os.path.join(ROOT, "Cargo.lock"):
        p.append(f"cargoDeps vendors {pkg['cargoDepsLockFile']}")
    # src: exactly nixos/source.nix's files (the optional ones when present).
    listed = pkg["sourceList"]
    wanted = sorted(set(listed["required"]) | {f for f in listed["optional"] if os.path.exists(os.path.join(ROOT, f))})
    if os.path.realpath(pkg["sourceRoot"]) != ROOT or pkg["sourceFiles"] != wanted:
        p.append(f"src holds {pkg['sourceFiles']} under {pkg['sourceRoot']}, nixos/source.nix lists {wanted}")
    if "protobuf" not in pkg["nativeBuildInputs"]:
        p.append("protobuf in nativeBuildInputs")
    if not pkg["sameAsSwitchboard"]:
        p.append("packages.default is packages.switchboard")
    emulate_post_install(pkg["postInstall"], pkg["sourceFiles"], p)
    check("package: build arguments and postInstall (run in bash)", p)

    app = d["app"]
    p = []
    if app["type"] != "app" or app["program"] != app["devStackPath"] + "/bin/switchboard-dev-stack":
        p.append(f"apps.default {app}")
    # flake.nix's devServers: both MongoDB-protocol servers (--mongodb-server ferretdb picks FerretDB).
    dev_servers = ["postgresql", "rabbitmq-server", "erlang", "mongodb-ce", "ferretdb", "mailhog", "mailhog-lowercase",
                   "prometheus"]
    for needed in ["switchboard"] + dev_servers:
        if not has(app["runtimeInputs"], needed):
            p.append(f"{needed} on the dev stack's PATH")
    if "switchboard-0.1.0" not in app["runtimeInputs"]:
        p.append(f"the flake's package on the dev stack's PATH: {app['runtimeInputs']}")
    if "exec switchboard-stack" not in app["text"]:
        p.append("the app runs switchboard-stack")
    syntax = subprocess.run(["bash", "-n", "-c", app["text"]], capture_output=True, text=True)
    if syntax.returncode != 0:
        p.append("app script: " + syntax.stderr)
    check("apps.default: the dev stack with its servers on PATH", p)

    shell = d["devShell"]
    # The toolchain, what the test suite runs besides the servers
    # (systemd-socket-activate, unshare, the browser tests), and the servers.
    p = [f"{t} in the dev shell" for t in ["cargo", "rustc", "clippy", "rustfmt", "rust-analyzer", "protobuf",
                                             "nixfmt", "systemd", "util-linux", "chromium", "chromedriver"]
         + dev_servers
         if not has(shell["packages"], t)]
    if not shell["env"].get("PROTOC", "").endswith("-protobuf/bin/protoc"):
        p.append(f"PROTOC in the dev shell, got {shell['env'].get('PROTOC')}")
    if "-rabbitmq-server/sbin:$PATH" not in shell["shellHook"]:
        p.append("the shell hook puts RabbitMQ's sbin/ on PATH")
    check("devShells.default", p)

    p = []
    expected = ["basic", "cargo-tests", "clippy", "devShell-default", "formatting", "multi-host",
                "package-dev-stack", "package-switchboard"]
    if d["checkNames"] != expected:
        p.append(f"checks {d['checkNames']}, expected {expected}")
    for name, same in d["checkIs"].items():
        if not same:
            p.append(f"checks.{name} is not the {name.replace('-', ' ', 1)} output itself")
    if d["formatterExcludes"] != ["nixos/tests/eval/*"]:
        p.append("formatter leaves the copied evaluator alone")
    check("checks (packages, dev shell, VM tests, cargo-tests, clippy, formatting) and formatter", p)

    def same_sources(what, c, p):
        for key, label in [("sameSrc", "src"), ("sameCargoDeps", "cargoDeps"), ("sameVersion", "version")]:
            if not c[key]:
                p.append(f"{what}: {label} is not the package's own")

    ct = d["cargoTests"]
    p = []
    same_sources("cargo-tests", ct, p)
    if ct["doCheck"] is not True:
        p.append("cargo-tests runs its check phase (doCheck)")
    if ct["dontBuild"] is not True:
        p.append("cargo-tests has no build phase of its own (dontBuild = true; cargo test builds)")
    if ct["checkType"] != "debug":
        p.append(f"cargo-tests: checkType \"debug\" (no --profile), got {ct['checkType']}")
    if ct["cargoTestFlags"] != ["--workspace"]:
        p.append(f"cargo-tests: cargoTestFlags [\"--workspace\"], got {ct['cargoTestFlags']}")
    if ct["env"].get("SWITCHBOARD_SKIP_SERVER_TESTS") != "1":
        p.append("cargo-tests: env.SWITCHBOARD_SKIP_SERVER_TESTS = \"1\" (the sandbox has no servers)")
    if not ct["env"].get("PROTOC", "").endswith("-protobuf/bin/protoc"):
        p.append(f"cargo-tests: PROTOC {ct['env'].get('PROTOC')}")
    if not has(ct["nativeBuildInputs"], "protobuf"):
        p.append("cargo-tests: protobuf in nativeBuildInputs")
    for tool in ["systemd", "util-linux"]:
        if not has(ct["nativeCheckInputs"], tool):
            p.append(f"cargo-tests: {tool} in nativeCheckInputs, got {ct['nativeCheckInputs']}")
    if os.path.realpath(ct["lockFile"]) != os.path.join(ROOT, "Cargo.lock"):
        p.append(f"cargo-tests vendors {ct['lockFile']}")
    if not ct["installPhase"] or "$out" not in ct["installPhase"]:
        p.append(f"cargo-tests: installPhase creates $out, got {ct['installPhase']!r}")
    else:
        syntax = subprocess.run(["bash", "-n", "-c", ct["installPhase"]], capture_output=True, text=True)
        if syntax.returncode != 0:
            p.append("cargo-tests installPhase: " + syntax.stderr)
    check("checks.cargo-tests: the whole workspace's tests on the package's source, servers skipped", p)

    cl = d["clippy"]
    p = []
    same_sources("clippy", cl, p)
    if cl["doCheck"] is not False:
        p.append("clippy: doCheck = false")
    if not has(cl["nativeBuildInputs"], "clippy") or not has(cl["nativeBuildInputs"], "protobuf"):
        p.append(f"clippy: clippy and protobuf in nativeBuildInputs, got {cl['nativeBuildInputs']}")
    if not cl["env"].get("PROTOC", "").endswith("-protobuf/bin/protoc"):
        p.append(f"clippy: PROTOC {cl['env'].get('PROTOC')}")
    build = cl["buildPhase"] or ""
    commands = [line for line in build.splitlines() if re.match(r"\s*cargo\s+clippy\b", line)]
    if len(commands) != 1:
        p.append(f"clippy: the build phase runs `cargo clippy` once, got {build!r}")
    else:
        words = shlex.split(commands[0])
        cargo_args, lint_args = (words[:words.index("--")], words[words.index("--") + 1:]) if "--" in words \
            else (words, [])
        for flag in ["--workspace", "--all-targets", "--offline"]:
            if flag not in cargo_args:
                p.append(f"clippy: cargo clippy {flag}")
        denied = any(a == "-D" and b == "warnings" for a, b in zip(lint_args, lint_args[1:])) \
            or "-Dwarnings" in lint_args
        if not denied:
            p.append(f"clippy: -D warnings after `--` (clippy's own arguments), got {commands[0]!r}")
    for hook in ["runHook preBuild", "runHook postBuild"]:
        if hook not in build:
            p.append(f"clippy: build phase runs {hook}")
    syntax = subprocess.run(["bash", "-n", "-c", build], capture_output=True, text=True)
    if syntax.returncode != 0:
        p.append("clippy buildPhase: " + syntax.stderr)
    if not cl["installPhase"] or "$out" not in cl["installPhase"]:
        p.append(f"clippy: installPhase creates $out, got {cl['installPhase']!r}")
    # The package's postInstall installs units into $out/lib; here $out is a file.
    if cl["postInstall"].strip():
        p.append("clippy: postInstall emptied (the package's installs units)")
    check("checks.clippy: cargo clippy --workspace --all-targets -D warnings on the package's source", p)

    mod = d["nixosModule"]
    p = []
    if not mod["switchboard"]["package"].endswith("-switchboard-0.1.0"):
        p.append(f"the exported module defaults to the flake's package, got {mod['switchboard']['package']}")
    if mod["failedAssertions"] or mod["warnings"]:
        p.append(f"assertions {mod['failedAssertions']} warnings {mod['warnings']}")
    check("nixosModules.default uses the flake's package", p)

    for name, test in sorted(d["tests"].items()):
        p = []
        for node, out in test["nodes"].items():
            if out["failedAssertions"] or out["warnings"]:
                p.append(f"{node}: assertions {out['failedAssertions']} warnings {out['warnings']}")
        lint = lint_script(name, test["script"], sorted(test["nodes"]), p)
        if name == "basic":
            node = test["nodes"]["machine"]
            server = node["switchboard"]["mongodb"]["server"]
            unit = "ferretdb" if server == "ferretdb" else "mongodb"
            if unit not in node["services"]:
                p.append(f"machine runs {unit} (mongodb.server = {server})")
            if f'"{unit}.service"' not in test["script"]:
                p.append(f"the script waits for {unit}.service (mongodb.server = {server})")
        if name == "multi-host":
            app_node, db = test["nodes"]["app"], test["nodes"]["db"]
            db_ip = "192.168.1.3"
            for svc in ["auth", "broker", "logger", "mail", "listener"]:
                allow = app_node["systemd"]["services"][f"switchboard-{svc}"]["serviceConfig"].get("IPAddressAllow")
                if allow != [db_ip]:
                    p.append(f"app: {svc} may reach db ({db_ip}), got {allow}")
            if app_node["networking"]["firewall"]["allowedTCPPorts"] != [8080]:
                p.append("app opens only the broker's port")
            for dep in ["postgresql", "mongodb", "rabbitmq", "mailhog"]:
                if dep in app_node["services"]:
                    p.append(f"app runs no {dep}")
                if dep not in db["services"]:
                    p.append(f"db runs {dep}")
            if "192.168.1.1/32" not in db["services"]["postgresql"]["authentication"]:
                p.append("db lets app's address in")
        check(f"VM test {name}: nodes evaluate ({', '.join(sorted(test['nodes']))}); script {lint}", p)

    failed = 0
    for name, problems, _ in results:
        if problems:
            failed += 1
            print(f"FAIL {name}")
            for problem in problems:
                print("    " + problem.replace("\n", "\n    ")[:3000])
        else:
            print(f"ok   {name}")
    print(f"flake smoke: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
