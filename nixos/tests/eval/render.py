#!/usr/bin/env python3
"""Writes the files NixOS would install for one node of a NixOS test file.

The node is evaluated by render.nix (the stand-in evaluator of stub-eval.nix:
nixpkgs' real module system and lib, typed stand-ins for the NixOS options),
and this script lays out, under a root directory, what the resulting system
would contain:

  nix/store/<pkg>/lib/systemd/system/   the package's units: systemd/*.service,
                                        *.socket, *.target run through the
                                        package's own postInstall (@bindir@ ->
                                        <pkg>/bin), as nixos/package.nix does
  nix/store/<pkg>/bin/                  empty (a mount point) or, with
                                        --bindir, links to built binaries
  etc/systemd/system/                   nixpkgs' generateUnits
                                        (nixos/lib/systemd-lib.nix): a link to
                                        every unit of systemd.packages; for each
                                        systemd.{services,sockets,targets,...}
                                        definition of a unit the package ships,
                                        <unit>.d/overrides.conf; a whole unit
                                        file for a unit it does not ship; a link
                                        to /dev/null for `enable = false`;
                                        <target>.wants/ (.requires/, .upholds/)
                                        links for wantedBy (requiredBy,
                                        upheldBy); aliases; default.target
  nix/store/...-unit-script-*/bin/*     the scripts `script`, `preStart`, ...
                                        become (makeJobScript: `set -e` first)
  nix/store/...-X-Restart-Triggers-*    as nixpkgs writes them
  etc/<target>, nix/store/<source>      every environment.etc entry whose
                                        content is known: `text`, a file of the
                                        repository, or a pkgs.formats.* /
                                        writeText result (TOML and JSON written
                                        from the value); linked to its store
                                        path (mode "symlink") or copied with its
                                        mode
  etc/tmpfiles.d/00-nixos.conf          systemd.tmpfiles.rules
  etc/passwd, etc/group, etc/shadow     users.users / users.groups (as the
                                        activation script writes them; system
                                        uids and gids allocated below 1000)
  etc/tmpfiles.d/00-nixos-users.conf    home directories of createHome users
                                        (the activation script creates them)
  render.json                           the evaluation, for later steps

Unit files follow nixpkgs' text generators (serviceToUnit, socketToUnit,
targetToUnit, ... in systemd-lib.nix) key for key, from the option values the
stand-in evaluator computed. What nixpkgs does that this does not: it also
links systemd's own upstream units into etc/systemd/system (on a host with
systemd installed, /usr/lib/systemd/system has them), and store paths of
packages other than the Switchboard package are not created (the stand-in
evaluator's packages are fake; tests/system/nixos/standins.py materialises
them for the system test container).

Usage:
  render.py --lib NIXPKGS_LIB --test nixos/tests/basic.nix [--node machine]
            --out DIR [--bindir target/debug]
  render.py --from-json DIR/render.json --out DIR2      (no evaluation)
Exit status: 0 written, 1 evaluation failed, 2 usage.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
RENDER_NIX = os.path.join(HERE, "render.nix")

UNIT_KINDS = {  # JSON key -> unit suffix
    "services": "service",
    "sockets": "socket",
    "targets": "target",
    "timers": "timer",
    "paths": "path",
    "slices": "slice",
}
# makeJobScript's file names: <unit>-<suffix>, one per script option.
SCRIPT_OPTIONS = {
    "pre-start": "preStart",
    "start": "script",
    "post-start": "postStart",
    "reload": "reload",
    "pre-stop": "preStop",
    "post-stop": "postStop",
}
JOB_SCRIPT_RE = re.compile(r"/nix/store/[0-9a-z]+-unit-script-[^/\s]+/bin/([^/\s]+)")


# --- evaluation -------------------------------------------------------------

def find_lib(path):
    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, "lib", "default.nix")):
        path = os.path.join(path, "lib")
    if not os.path.isfile(os.path.join(path, "default.nix")):
        raise SystemExit(f"render: no nixpkgs lib at {path}")
    return path


def evaluate(lib, test_file, node="machine"):
    """Runs render.nix; returns its JSON, or raises RuntimeError with Nix's message."""
    cmd = ["nix-instantiate", "--eval", "--strict", "--json", RENDER_NIX,
           "--arg", "libPath", find_lib(lib),
           "--arg", "testFile", os.path.abspath(test_file),
           "--argstr", "node", node]
    env = dict(os.environ)
    if os.geteuid() != 0 and not env.get("NIX_REMOTE"):
        env["NIX_REMOTE"] = "dummy://"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        noise = "the group 'nixbld' specified in 'build-users-group' does not exist"
        raise RuntimeError("\n".join(l for l in proc.stderr.splitlines() if noise not in l))
    return json.loads(proc.stdout)


# --- nixpkgs' unit text generators (nixos/lib/systemd-lib.nix) ---------------

def to_option(x):
    if x is True:
        return "true"
    if x is False:
        return "false"
    return nix_to_string(x)


def nix_to_string(x):
    """builtins.toString for the JSON values the evaluator emits."""
    if x is None or x is False:
        return ""
    if x is True:
        return "1"
    if isinstance(x, list):
        return " ".join(nix_to_string(v) for v in x)
    if isinstance(x, float):
        return f"{x:f}"
    return str(x)


def attrs_to_section(attrs):
    out = []
    for name in sorted(attrs):
        value = attrs[name]
        for x in value if isinstance(value, list) else [value]:
            out.append(f"{name}={to_option(x)}\n")
    return "".join(out)


def settings_to_sections(settings):
    return "\n".join(f"[{name}]\n{attrs_to_section(attrs)}\n" for name, attrs in sorted(settings.items()))


def common_unit_text(u, lines):
    text = settings_to_sections({"Unit": u.get("unitConfig", {})}) + lines
    if u.get("wantedBy"):
        text += "\n[Install]\nWantedBy=" + " ".join(u["wantedBy"]) + "\n"
    return text


def nix_json_string(s):
    # builtins.toJSON: UTF-8 as is, quotes, backslashes and controls escaped.
    return json.dumps(s, ensure_ascii=False)


def service_text(u, global_env):
    env = {**global_env, **u.get("environment", {})}
    lines = "[Service]\n"
    for n in sorted(env):
        if env[n] is not None:
            lines += f"Environment={nix_json_string(f'{n}={nix_to_string(env[n])}')}\n"
    if u.get("reloadIfChanged"):
        lines += "X-ReloadIfChanged=true\n"
    elif u.get("restartIfChanged") is False:
        lines += "X-RestartIfChanged=false\n"
    if u.get("stopIfChanged") is False:
        lines += "X-StopIfChanged=false\n"
    if u.get("notSocketActivated"):
        lines += "X-NotSocketActivated=true\n"
    lines += attrs_to_section(u.get("serviceConfig", {}))
    return common_unit_text(u, lines)


def socket_text(u):
    lines = ("[Socket]\n" + attrs_to_section(u.get("socketConfig", {})) + "\n"
             + "\n".join(f"ListenStream={s}" for s in u.get("listenStreams", [])) + "\n"
             + "\n".join(f"ListenDatagram={s}" for s in u.get("listenDatagrams", [])) + "\n")
    return common_unit_text(u, lines)


def unit_text(kind, u, global_env):
    if kind == "services":
        return service_text(u, global_env)
    if kind == "sockets":
        return socket_text(u)
    if kind == "targets":
        return settings_to_sections({"Unit": u.get("unitConfig", {})})
    section = {"timers": ("Timer", "timerConfig"), "paths": ("Path", "pathConfig"),
               "slices": ("Slice", "sliceConfig")}[kind]
    return common_unit_text(u, settings_to_sections({section[0]: u.get(section[1], {})}))


# --- pkgs.formats ------------------------------------------------------------

def toml_key(k):
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise ValueError(f"no TOML for {v!r}")


def toml_dumps(value, prefix=()):
    """TOML as pkgs.formats.toml writes it (json2toml): scalars first, then tables."""
    out = []
    scalars = {k: v for k, v in value.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in value.items() if isinstance(v, dict)}
    if prefix and (scalars or not tables):
        out.append("[" + ".".join(toml_key(p) for p in prefix) + "]")
    for k, v in scalars.items():
        out.append(f"{toml_key(k)} = {toml_value(v)}")
    if out:
        out.append("")
    for k, v in tables.items():
        out.append(toml_dumps(v, prefix + (k,)))
    return "\n".join(out)


def etc_content(entry):
    """The bytes of an /etc entry, or None where the evaluation does not know them."""
    if "text" in entry:
        return entry["text"].encode()
    if "file" in entry:
        with open(entry["file"], "rb") as f:
            return f.read()
    fmt = entry.get("format")
    if fmt == "toml":
        return toml_dumps(entry["value"]).encode()
    if fmt == "json":
        return (json.dumps(entry["value"], indent=2) + "\n").encode()
    return None


# --- the tree ----------------------------------------------------------------

class Tree:
    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.notes = []

    def path(self, p):
        return os.path.join(self.root, p.lstrip("/"))

    def write(self, p, data, mode=0o444):
        full = self.path(p)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if os.path.lexists(full):
            os.chmod(full, 0o644) if not os.path.islink(full) else None
            os.unlink(full)
        with open(full, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.chmod(full, mode)

    def link(self, p, target):
        full = self.path(p)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if os.path.lexists(full):
            os.unlink(full) if not os.path.isdir(full) or os.path.islink(full) else shutil.rmtree(full)
        os.symlink(target, full)


def install_package(tree, ev, bindir):
    """The package's $out: its postInstall run in bash, as the build would."""
    pkg = ev["summary"]["switchboard"].get("package")
    if not pkg:
        return None, []
    out = tree.path(pkg)
    os.makedirs(out, exist_ok=True)
    prelude = r'''
set -euo pipefail
substituteInPlace() {
  local file=$1 flag=$2 from=$3 to=$4
  [ "$flag" = --replace-fail ] || { echo "unexpected flag $flag" >&2; return 1; }
  grep -qF -- "$from" "$file" || { echo "substituteInPlace: $from not in $file" >&2; return 1; }
  FROM=$from TO=$to perl -0pi -e 's/\Q$ENV{FROM}\E/$ENV{TO}/g' "$file"
}
'''
    with tempfile.TemporaryDirectory() as src:
        for d in ("systemd", "config"):
            if os.path.isdir(os.path.join(REPO, d)):
                shutil.copytree(os.path.join(REPO, d), os.path.join(src, d))
        # $out is the store path as seen from the root; the build writes
        # below the root, and the store path is what lands in the units.
        proc = subprocess.run(["bash", "-c", prelude + ev["postInstall"]], cwd=src,
                              env={**os.environ, "out": out}, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"postInstall failed:\n{proc.stdout}{proc.stderr}")
    unit_dir = os.path.join(out, "lib", "systemd", "system")
    shipped = sorted(os.listdir(unit_dir)) if os.path.isdir(unit_dir) else []
    for name in shipped:
        f = os.path.join(unit_dir, name)
        os.chmod(f, 0o644)
        with open(f) as fh:
            text = fh.read()
        with open(f, "w") as fh:
            fh.write(text.replace(out, pkg))
        os.chmod(f, 0o444)
    os.makedirs(os.path.join(out, "bin"), exist_ok=True)
    if bindir:
        for name in sorted(os.listdir(bindir)):
            full = os.path.join(os.path.abspath(bindir), name)
            if name.startswith("switchboard-") and os.path.isfile(full) and os.access(full, os.X_OK):
                tree.link(f"{pkg}/bin/{name}", full)
    return pkg, shipped


def job_scripts(tree, unit_name, u):
    """makeJobScript's files for the script options of one service."""
    base = unit_name.removesuffix(".service")
    for key, value in u.get("serviceConfig", {}).items():
        if not key.startswith("Exec"):
            continue
        for cmd in value if isinstance(value, list) else [value]:
            for m in JOB_SCRIPT_RE.finditer(str(cmd)):
                path = m.group(0)
                script_name = m.group(1)
                suffix = script_name[len(base) + 1:] if script_name.startswith(base + "-") else None
                option = SCRIPT_OPTIONS.get(suffix)
                if option is None or not u.get(option):
                    tree.notes.append(f"{unit_name}: {path}: no script option for it")
                    continue
                tree.write(path, "#!/bin/bash\nset -e\n\n" + u[option] + "\n", 0o555)


def write_units(tree, ev, pkg, shipped):
    s = ev["summary"]["systemd"]
    global_env = s.get("globalEnvironment", {})
    etc = "etc/systemd/system"
    os.makedirs(tree.path(etc), exist_ok=True)
    for name in shipped:
        tree.link(f"{etc}/{name}", f"{pkg}/lib/systemd/system/{name}")
    written = {}
    for kind in UNIT_KINDS:
        for attr, u in sorted(s.get(kind, {}).items()):
            name = u.get("name") or f"{attr}.{UNIT_KINDS[kind]}"
            strategy = u.get("overrideStrategy", "asDropinIfExists")
            exists = os.path.lexists(tree.path(f"{etc}/{name}"))
            if not u.get("enable", True):
                if strategy == "asDropin" and exists:
                    tree.write(f"{etc}/{name}.d/overrides.conf", "")
                    tree.notes.append(f"{name}: asDropin with enable = false: empty drop-in")
                else:
                    tree.link(f"{etc}/{name}", "/dev/null")
                written[name] = "masked"
            else:
                text = unit_text(kind, u, global_env)
                if exists or strategy == "asDropin":
                    tree.write(f"{etc}/{name}.d/overrides.conf", text)
                    written[name] = "drop-in"
                else:
                    tree.write(f"{etc}/{name}", text)
                    written[name] = "unit"
                if kind == "services":
                    job_scripts(tree, name, u)
                trigger = u.get("unitConfig", {}).get("X-Restart-Triggers")
                if trigger:
                    tree.write(trigger, " ".join(nix_to_string(t) for t in u.get("restartTriggers", [])))
                trigger = u.get("unitConfig", {}).get("X-Reload-Triggers")
                if trigger:
                    tree.write(trigger, " ".join(nix_to_string(t) for t in u.get("reloadTriggers", [])))
            for alias in u.get("aliases", []):
                tree.link(f"{etc}/{alias}", name)
            for option, suffix in (("wantedBy", "wants"), ("requiredBy", "requires"), ("upheldBy", "upholds")):
                for other in u.get(option, []):
                    tree.link(f"{etc}/{other}.{suffix}/{name}", f"../{name}")
    # "Stupid misc. symlinks" of generateUnits (systemd.defaultUnit,
    # systemd.ctrlAltDelUnit defaults).
    tree.link(f"{etc}/default.target", "multi-user.target")
    tree.link(f"{etc}/ctrl-alt-del.target", "reboot.target")
    tree.link(f"{etc}/multi-user.target.wants/remote-fs.target", "../remote-fs.target")
    return written


def write_etc(tree, ev):
    done = {}
    for entry in ev["etc"]:
        target = entry["target"]
        data = etc_content(entry)
        if data is None:
            tree.notes.append(f"/etc/{target}: content unknown to the evaluation, not written")
            continue
        mode = entry.get("mode", "symlink")
        if mode in ("symlink", "direct-symlink"):
            tree.write(entry["source"], data)
            tree.link(f"etc/{target}", entry["source"])
        else:
            tree.write(f"etc/{target}", data, int(mode, 8))
            if entry.get("user", "+0") not in ("+0", "root") or entry.get("group", "+0") not in ("+0", "root"):
                tree.notes.append(f"/etc/{target}: owner {entry.get('user')}:{entry.get('group')} not applied")
        done[target] = mode
    return done


def write_tmpfiles(tree, ev):
    t = ev["summary"]["systemd"].get("tmpfiles", {})
    rules = list(t.get("rules", []))
    if rules:
        tree.write("etc/tmpfiles.d/00-nixos.conf", "\n".join(rules) + "\n")
    for conf, paths in sorted(t.get("settings", {}).items()):
        lines = []
        for path, types in sorted(paths.items()):
            for typ, r in sorted(types.items()):
                lines.append(" ".join([typ, path, r.get("mode", "-"), r.get("user", "-"), r.get("group", "-"),
                                       r.get("age", "-"), r.get("argument", "")]).rstrip())
        tree.write(f"etc/tmpfiles.d/{conf}.conf", "\n".join(lines) + "\n")


def write_users(tree, ev):
    """passwd/group/shadow as the activation script (update-users-groups.pl) writes them."""
    users = ev["summary"]["users"]["users"]
    groups = ev["summary"]["users"]["groups"]
    gids = {"root": 0, "wheel": 1, "users": 100, "nogroup": 65534}
    next_id = [999]

    def allocate(taken):
        while next_id[0] in taken:
            next_id[0] -= 1
        value = next_id[0]
        next_id[0] -= 1
        return value

    for g in sorted(groups):
        name = groups[g].get("name") or g
        if groups[g].get("gid") is not None:
            gids[name] = groups[g]["gid"]
    for g in sorted(groups):
        name = groups[g].get("name") or g
        if name not in gids:
            gids[name] = allocate(set(gids.values()))
    passwd = ["root:x:0:0:System administrator:/root:/run/current-system/sw/bin/bash"]
    shadow = ["root:!:1::::::"]
    members = {}
    taken = {0, 65534} | {u["uid"] for u in users.values() if u.get("uid") is not None}
    for key in sorted(users):
        u = users[key]
        if not u.get("enable", True):
            continue
        name = u.get("name") or key
        uid = u["uid"] if u.get("uid") is not None else allocate(taken | set(gids.values()))
        taken.add(uid)
        group = u.get("group") or "nogroup"
        if group not in gids:
            gids[group] = allocate(taken | set(gids.values()))
            tree.notes.append(f"user {name}: group {group} not declared; allocated")
        shell = "/run/current-system/sw/bin/bash" if u.get("useDefaultShell") or u.get("isNormalUser") \
            else "/run/current-system/sw/bin/nologin"
        passwd.append(f"{name}:x:{uid}:{gids[group]}:{u.get('description', '')}:{u.get('home', '/var/empty')}:{shell}")
        shadow.append(f"{name}:!:1::::::")
        for extra in u.get("extraGroups", []):
            members.setdefault(extra, []).append(name)
        if u.get("createHome"):
            tree.home_rules.append(f"d {u['home']} {u.get('homeMode', '700').rjust(4, '0')} {name} {group} -")
    passwd.append("nobody:x:65534:65534:Unprivileged account (don't use!):/var/empty:/run/current-system/sw/bin/nologin")
    shadow.append("nobody:!:1::::::")
    for g in groups.values():
        for m in g.get("members", []):
            members.setdefault(g.get("name"), []).append(m)
    group_lines = [f"{name}:x:{gid}:{','.join(sorted(set(members.get(name, []))))}"
                   for name, gid in sorted(gids.items(), key=lambda kv: kv[1])]
    tree.write("etc/passwd", "\n".join(passwd) + "\n", 0o644)
    tree.write("etc/group", "\n".join(group_lines) + "\n", 0o644)
    tree.write("etc/shadow", "\n".join(shadow) + "\n", 0o600)
    if tree.home_rules:
        tree.write("etc/tmpfiles.d/00-nixos-users.conf", "\n".join(tree.home_rules) + "\n")


def write_tree(ev, root, bindir=None):
    """Lays out the node's files under ROOT; returns a summary of what was written."""
    tree = Tree(root)
    tree.home_rules = []
    pkg, shipped = install_package(tree, ev, bindir)
    units = write_units(tree, ev, pkg, shipped)
    etc = write_etc(tree, ev)
    write_tmpfiles(tree, ev)
    write_users(tree, ev)
    result = {"package": pkg, "shipped": shipped, "units": units, "etc": etc, "notes": tree.notes}
    with open(os.path.join(tree.root, "render.json"), "w") as f:
        json.dump(ev, f, indent=1)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", default=os.environ.get("NIXPKGS_LIB"), help="nixpkgs' lib (or $NIXPKGS_LIB)")
    ap.add_argument("--test", help="a NixOS test file ({ self }: { nodes; testScript; ... })")
    ap.add_argument("--node", default="machine")
    ap.add_argument("--from-json", help="a render.json written earlier, instead of evaluating")
    ap.add_argument("--out", required=True, help="root directory to write (created)")
    ap.add_argument("--bindir", help="built binaries to link into the package's bin/")
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            ev = json.load(f)
    else:
        if not args.test or not args.lib:
            ap.error("--test and --lib (or NIXPKGS_LIB) are needed to evaluate")
        try:
            ev = evaluate(args.lib, args.test, args.node)
        except RuntimeError as e:
            print(f"render: evaluation failed:\n{e}", file=sys.stderr)
            return 1
    result = write_tree(ev, args.out, args.bindir)
    for name, what in sorted(result["units"].items()):
        print(f"{what:8} {name}")
    for target, mode in sorted(result["etc"].items()):
        print(f"etc      /etc/{target} ({mode})")
    for note in result["notes"]:
        print(f"note     {note}")
    for w in ev["summary"].get("warnings", []):
        print(f"warning  {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
