#!/usr/bin/env python3
"""Prepares one case of tests/system/module-run: a NixOS test node, rendered
as NixOS would install it, plus what the system test container needs to boot
it in place of a VM.

  1. evaluate the node with nixos/tests/eval/render.nix (stand-in evaluator);
  2. standins.patch: nixpkgs' own scripts for the dependency servers' units;
  3. nixos/tests/eval/render.py: package units, drop-ins, whole units, masks,
     wants links, job scripts, /etc entries, users, tmpfiles;
  4. standins: config files and store paths for the dependency servers;
  5. the base system a NixOS VM has and the container's empty /etc lacks,
     each part an approximation listed as a deviation: /etc/hosts of the test
     network, nsswitch.conf, PAM for runuser/su, the system path
     (/run/current-system/sw: NixOS's core packages and the node's
     environment.systemPackages, as the host's programs), the test VLAN's
     address on eth1, masks for host units the package's units Want= that
     NixOS does not have, a preset that enables nothing;
  6. test-driver.service (as the VM's backdoor.service: root, wanted by
     multi-user.target) running driver.py on the node's testScript.

Usage: prepare.py (--lib NIXPKGS_LIB | --evaluated JSON) --test FILE [--node machine]
                  --work DIR [--skip-file FILE] [--save-evaluation JSON]

Step 1 is the only one that needs nixpkgs' lib and nix-instantiate. Its
result (plain JSON, no host paths) can be saved with --save-evaluation and
used instead of evaluating with --evaluated: module-run keeps one per case in
tests/system/nixos/evaluated/, so that CI, which fetches no nixpkgs, boots
the same trees, and compares them with a fresh evaluation wherever the lib
is at hand.
Writes DIR/root (bound into the container: DIR/root/etc at /etc,
DIR/root/nix at /nix), DIR/case/{script.py,skips}, DIR/deviations,
DIR/package (the store path whose bin/ the runner binds the binaries onto).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(REPO, "nixos", "tests", "eval"))
sys.path.insert(0, HERE)

import render  # noqa: E402
import standins  # noqa: E402

# Inside the container: this directory is bound at /driver, the case at /case.
DRIVER_DIR = "/driver"
CASE_DIR = "/case"

# nixos/modules/config/system-path.nix corePackageNames and defaultPackageNames,
# and what NixOS's base modules add (systemd, kmod, iproute2, iputils, shadow,
# dbus), mapped to the Debian packages whose programs stand in for them.
SYSTEM_PATH_PACKAGES = {
    "acl": ["acl"], "attr": ["attr"], "bashInteractive": ["bash"], "bzip2": ["bzip2"],
    "coreutils-full": ["coreutils"], "cpio": ["cpio"], "curl": ["curl"], "diffutils": ["diffutils"],
    "findutils": ["findutils"], "gawk": ["gawk"], "getent/getconf/libc": ["libc-bin"],
    "gnugrep": ["grep"], "gnupatch": ["patch"], "gnused": ["sed"], "gnutar": ["tar"], "gzip": ["gzip"],
    "xz": ["xz-utils"], "less": ["less"], "libcap": ["libcap2-bin"], "ncurses": ["ncurses-bin"],
    "mkpasswd": ["whois"], "procps": ["procps"], "su/util-linux": ["util-linux", "mount", "bsdutils"],
    "time": ["time"], "which": ["debianutils:which"], "zstd": ["zstd"],
    "perl": ["perl-base", "perl"], "rsync": ["rsync"], "strace": ["strace"],
    "systemd": ["systemd", "systemd-container", "udev"], "kmod": ["kmod"], "iproute2": ["iproute2"],
    "iputils": ["iputils-ping"], "shadow": ["passwd", "login"], "dbus": ["dbus", "dbus-bin", "dbus-daemon"],
}
BIN_DIRS = ("/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/")
# Host units NixOS has too (systemd's own): never masked.
SYSTEMD_PACKAGES = {"systemd", "systemd-container", "udev", "systemd-sysv", "systemd-timesyncd",
                    "systemd-resolved", "systemd-homed", "systemd-boot"}
TEST_ADDRESS_PREFIX = 24


def debian_programs(package):
    """{name: path} of the programs a Debian package installs ('' if not installed)."""
    only = None
    if ":" in package:
        package, only = package.split(":", 1)
    proc = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    out = {}
    for path in proc.stdout.splitlines():
        if path.startswith(BIN_DIRS) and os.path.basename(path) and not os.path.isdir(path):
            name = os.path.basename(path)
            if only and name != only:
                continue
            # usrmerge: /bin/x is /usr/bin/x.
            out.setdefault(name, path if os.path.lexists(path) else "/usr" + path)
    return out


def system_path(ev, tree, deviations):
    """/run/current-system/sw: environment.systemPackages, then NixOS's core packages."""
    links, missing = {}, []
    for pkg in ev["systemPackages"]:
        name = pkg["name"]
        base = name.split("-")[0] if name.startswith("postgresql") else name
        if base == "postgresql":
            progs = {n: os.path.join(standins.PG_BIN, n) for n in sorted(os.listdir(standins.PG_BIN))}
        elif name == "rabbitmq-server":
            # rabbitmq-env and rabbitmq-defaults too: the scripts source them from their own directory.
            # nixpkgs wraps the scripts with Erlang on their PATH; Debian's expect erl on PATH.
            progs = {n: os.path.join(standins.RABBITMQ_BIN, n) for n in sorted(os.listdir(standins.RABBITMQ_BIN))}
            progs.update({n: p for n, p in (debian_programs("erlang-base") or {}).items() if n not in progs})
        elif name in ("python3",):
            progs = {"python3": "/usr/bin/python3"}
        else:
            progs = debian_programs(name)
        if progs is None:
            missing.append(name)
            continue
        for n, target in progs.items():
            links.setdefault(n, target)
    for nix, debs in SYSTEM_PATH_PACKAGES.items():
        for deb in debs:
            progs = debian_programs(deb)
            if progs is None:
                missing.append(f"{nix} (Debian {deb})")
                continue
            for n, target in progs.items():
                links.setdefault(n, target)
    links["sh"] = "/bin/bash"  # NixOS's /bin/sh and sw/bin/sh are bash
    links.setdefault("awk", "/usr/bin/awk")
    links["nc"] = f"{DRIVER_DIR}/nc"
    content = json.dumps(sorted(links.items()))
    store = standins.fake_store_path("system-path", content)
    for n, target in sorted(links.items()):
        tree.link(f"{store}/bin/{n}", target)
    deviations.append("/run/current-system/sw/bin links the host's programs of the Debian packages that stand in "
                      "for environment.systemPackages and NixOS's core packages; sh is bash; nc is a stand-in "
                      "(tests/system/nixos/nc, -z only)" + (f"; not on this host: {', '.join(missing)}" if missing else ""))
    return store


def base_system(ev, tree, deviations, store_path):
    node = ev["node"]
    address = ev["addresses"][node]
    hosts = ["127.0.0.1 localhost", "::1 localhost", f"127.0.0.2 {ev['hostName']}"]
    for name in ev["nodeNames"]:
        hosts.append(f"{ev['addresses'][name]} {name}")
    tree.write("etc/hosts", "\n".join(hosts) + "\n", 0o644)
    tree.write("etc/hostname", ev["hostName"] + "\n", 0o644)
    tree.write("etc/nsswitch.conf",
               "passwd: files systemd\ngroup: files [success=merge] systemd\nshadow: files\n"
               "hosts: files dns\nnetworks: files\nethers: files\nservices: files\nprotocols: files\nrpc: files\n",
               0o644)
    pam = ("# NixOS's security.pam.services.<name> for root-run tools (rootOK)\n"
           "auth sufficient pam_rootok.so\nauth required pam_unix.so\naccount required pam_unix.so\n"
           "session required pam_env.so conffile=/etc/pam/environment readenv=0\nsession required pam_unix.so\n")
    for service in ("runuser", "runuser-l", "su", "su-l", "login", "systemd-user"):
        tree.write(f"etc/pam.d/{service}", pam, 0o644)
    tree.write("etc/pam.d/other", "auth required pam_deny.so\naccount required pam_deny.so\n"
               "password required pam_deny.so\nsession required pam_deny.so\n", 0o644)
    tree.write("etc/pam/environment", "", 0o644)
    tree.write("etc/tmpfiles.d/00-stand-in-activation.conf",
               "# What NixOS's activation script sets up before systemd starts.\n"
               f"L+ /run/current-system/sw - - - - {store_path}\n"
               "d /run/wrappers/bin 0755 root root -\n"
               "d /var/empty 0555 root root -\n", 0o644)
    # A first boot with an empty /etc would apply the host's presets
    # (Debian: enable *); NixOS enables only what wantedBy links.
    tree.write("etc/systemd/system-preset/00-nixos-stand-in.preset", "disable *\n", 0o644)
    tree.write("etc/systemd/system/test-network.service", f"""[Unit]
Description=Stand-in for the VM's eth1 on the test VLAN ({address}/{TEST_ADDRESS_PREFIX})
DefaultDependencies=no
Before=sysinit.target network-pre.target network.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=true
ExecStart=/bin/sh -ec 'ip link add eth1 type dummy 2>/dev/null || ip link add eth1 type bridge; \\
  ip addr add {address}/{TEST_ADDRESS_PREFIX} dev eth1; ip link set eth1 up; ip link set lo up'
""", 0o644)
    tree.link("etc/systemd/system/sysinit.target.wants/test-network.service", "../test-network.service")
    deviations.append(f"the test network is one dummy interface eth1 with {address}/{TEST_ADDRESS_PREFIX} in the "
                      "container's own network namespace (a VM has a virtual NIC on VLAN 1); no firewall runs "
                      "(NixOS's networking.firewall is on in the VM)")
    deviations.append("/etc/hosts, nsswitch.conf and PAM (runuser, su) are written here in NixOS's spirit; the "
                      "base system users and groups (messagebus, systemd-*) come from the host's sysusers.d")


def mask_foreign_units(tree, deviations):
    """Host units that the rendered units pull in (Wants=, Requires=, ...) but
    that NixOS does not have: Debian's rabbitmq-server.service and the like."""
    etc = tree.path("etc/systemd/system")
    referenced = set()
    for dirpath, _dirs, names in os.walk(etc):
        for n in names:
            full = os.path.join(dirpath, n)
            target = os.path.realpath(full) if os.path.islink(full) else full
            target = tree.path(target) if not os.path.exists(target) and target.startswith("/nix/") else target
            if not os.path.isfile(target):
                continue
            with open(target, errors="replace") as f:
                for line in f:
                    key, _, value = line.strip().partition("=")
                    if key in ("Wants", "Requires", "Requisite", "BindsTo", "Upholds", "OnFailure", "OnSuccess"):
                        referenced.update(value.split())
    masked = []
    for unit in sorted(referenced):
        if os.path.lexists(os.path.join(etc, unit)):
            continue
        for d in ("/lib/systemd/system", "/usr/lib/systemd/system"):
            if os.path.exists(os.path.join(d, unit)):
                owner = subprocess.run(["dpkg", "-S", os.path.join("/lib/systemd/system", unit)],
                                       capture_output=True, text=True).stdout.split(":")[0]
                if owner not in SYSTEMD_PACKAGES:
                    tree.link(f"etc/systemd/system/{unit}", "/dev/null")
                    masked.append(f"{unit} ({owner or 'unknown package'})")
                break
    if masked:
        deviations.append("masked host units the package's units Want= but NixOS does not have: " + ", ".join(masked))


def driver_unit(tree, node):
    tree.write("etc/systemd/system/test-driver.service", f"""[Unit]
Description=Stand-in for the NixOS test driver's backdoor: runs the test script
SuccessAction=exit-force
FailureAction=exit-force

[Service]
Type=exec
ExecStart=/usr/bin/python3 {DRIVER_DIR}/driver.py --script {CASE_DIR}/script.py --node {node} \\
  --out /out --skip-file {CASE_DIR}/skips --global-timeout 600
StandardOutput=journal+console
StandardError=journal+console
""", 0o644)
    tree.link("etc/systemd/system/multi-user.target.wants/test-driver.service", "../test-driver.service")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", default=os.environ.get("NIXPKGS_LIB"))
    ap.add_argument("--test", required=True)
    ap.add_argument("--node", default="machine")
    ap.add_argument("--work", required=True)
    ap.add_argument("--skip-file")
    ap.add_argument("--evaluated", help="the node's evaluation, saved before, instead of evaluating")
    ap.add_argument("--save-evaluation", help="write the node's evaluation here (JSON)")
    args = ap.parse_args()
    if args.evaluated:
        with open(args.evaluated) as f:
            ev = json.load(f)
    else:
        if not args.lib:
            ap.error("--lib (or NIXPKGS_LIB) or --evaluated is needed")
        try:
            ev = render.evaluate(args.lib, args.test, args.node)
        except RuntimeError as e:
            print(f"prepare: evaluation of {args.test} failed:\n{e}", file=sys.stderr)
            return 1
    if args.save_evaluation:
        with open(args.save_evaluation, "w") as f:
            json.dump(ev, f, indent=1, sort_keys=True)
            f.write("\n")
    summary = ev["summary"]
    if ev["script"] is None:
        print(f"prepare: {args.test} has no testScript", file=sys.stderr)
        return 1

    files, deviations = standins.patch(summary)
    root = os.path.join(args.work, "root")
    if os.path.exists(root):
        shutil.rmtree(root)
    result = render.write_tree(ev, root)
    tree = render.Tree(root)
    for path, text in files.items():
        tree.write(path, text)
    store = system_path(ev, tree, deviations)
    base_system(ev, tree, deviations, store)
    mask_foreign_units(tree, deviations)
    driver_unit(tree, args.node)
    notes = standins.materialise(root, [p["path"] for p in ev["systemPackages"]], f"{DRIVER_DIR}/nc")
    deviations.extend(f"store path without stand-in: {n}" for n in notes)
    deviations.extend(f"renderer: {n}" for n in result["notes"])
    deviations.append(f"the package's bin/ ({result['package']}/bin) is the binaries the runner was given, bound "
                      "in; its units are the repository's systemd/ through the package's postInstall")
    deviations.append("the container runs the host's systemd (Debian 12: 252) with the host's /usr; NixOS 26.05 "
                      "has systemd 260, and its VM its own kernel")

    case = os.path.join(args.work, "case")
    os.makedirs(case, exist_ok=True)
    with open(os.path.join(case, "script.py"), "w") as f:
        f.write(ev["script"])
    skips = ""
    if args.skip_file and os.path.exists(args.skip_file):
        with open(args.skip_file) as f:
            skips = "".join(l for l in f if l.strip() and not l.lstrip().startswith("#"))
    with open(os.path.join(case, "skips"), "w") as f:
        f.write(skips)
    with open(os.path.join(args.work, "deviations"), "w") as f:
        f.write("".join(f"- {d}\n" for d in deviations))
    with open(os.path.join(args.work, "package"), "w") as f:
        f.write(result["package"] + "\n")
    units = result["units"]
    print(f"prepare: {ev['name']} node {args.node}: {sum(v == 'drop-in' for v in units.values())} drop-ins, "
          f"{sum(v == 'unit' for v in units.values())} whole units, {sum(v == 'masked' for v in units.values())} "
          f"masked, {len(result['etc'])} /etc entries; warnings: {summary.get('warnings') or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
