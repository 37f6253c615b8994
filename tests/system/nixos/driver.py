#!/usr/bin/python3
"""A stand-in for the NixOS test driver, run inside the booted container.

tests/system/module-run boots the rendered NixOS configuration in a
systemd-nspawn container; test-driver.service (wanted by multi-user.target, as
the VM's backdoor.service is) runs this file, which executes a VM test's
`testScript` against that running system, with the names the test driver
gives it: `machine` (and the node's own name), `start_all`, `subtest`,
`retry`, `log`, `t`, `os`, `driver`, `machines`, ...

The machine API follows nixpkgs' nixos/lib/test-driver
(src/test_driver/machine/__init__.py, driver.py, errors.py, logger.py; see
the README section "The NixOS module under systemd"): same signatures,
defaults and semantics. Commands run as root, one `timeout T bash -c 'set
-euo pipefail; CMD'` each, in /tmp, with the backdoor shell's environment
(USER, HOME=/root, PAGER= and /etc/profile's PATH: /run/wrappers/bin and
/run/current-system/sw/bin); `execute` returns (exit status, stdout) and
stderr goes to the log, as over the VM's serial console; `succeed`/`fail` raise
RequestedAssertionFailed; the `wait_*` calls retry once a second until their
timeout (900 s by default). What a container cannot do (power cycles, screens,
consoles, QMP, copying from the host) raises NotImplementedError naming it.

Lines the case marks with --skip are replaced by a logged SKIP (the line must
be a whole statement), and every SKIP is written to the results.

Usage (inside the container):
  driver.py --script FILE --node NAME --out DIR [--skip 'REGEX=>reason']... [--skip-file F]
            [--global-timeout SECONDS]
Results: DIR/results (PASS/FAIL/SKIP lines), DIR/driver.log; exit status 0
when the script ran to the end, 1 otherwise. Standard library only.
"""

import argparse
import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import traceback
import unittest

BACKDOOR_ENV = {
    # nixos/modules/testing/test-instrumentation.nix's backdoor script: USER,
    # HOME, DISPLAY, /etc/profile (PATH), PAGER=, cd /tmp.
    "USER": "root",
    "HOME": "/root",
    "DISPLAY": ":0.0",
    "PAGER": "",
    "PATH": "/run/wrappers/bin:/root/.nix-profile/bin:/run/current-system/sw/bin",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
}

STARTED = time.monotonic()
RESULTS = []
LOG_FILE = None


class TestScriptError(Exception):
    """The base of the driver's script errors (errors.py)."""


class RequestedAssertionFailed(TestScriptError):
    """machine.succeed(...) and friends failed (errors.py)."""


class MachineError(Exception):
    """A problem of the machine, not of the script (errors.py)."""


def _emit(line):
    stamp = f"[{time.monotonic() - STARTED:7.2f}s] "
    print(stamp + line, file=sys.stderr, flush=True)
    if LOG_FILE:
        LOG_FILE.write(stamp + line + "\n")
        LOG_FILE.flush()


def record(status, what):
    RESULTS.append(f"{status} {what}")
    _emit(f"{status} {what}")


class Logger:
    """The `log` the test script gets (TerminalLogger's interface)."""

    def log(self, message, attributes={}):
        prefix = f"{attributes['machine']}: " if "machine" in attributes else ""
        _emit(prefix + str(message))

    __call__ = log

    def info(self, *args, **kwargs):
        self.log(args[0], kwargs)

    debug = warning = info

    def error(self, *args, **kwargs):
        self.log(args[0], kwargs)

    def log_test_error(self, *args, **kwargs):
        self.log("!!! " + str(args[0]), kwargs)

    def log_serial(self, message, machine):
        _emit(f"{machine} # {message}")

    def print_serial_logs(self, enable):
        pass

    def set_log_level(self, level):
        pass

    @contextlib.contextmanager
    def nested(self, message, attributes={}):
        self.log(message, attributes)
        tic = time.monotonic()
        yield
        self.log(f"(finished: {message}, in {time.monotonic() - tic:.2f} seconds)", attributes)

    @contextlib.contextmanager
    def subtest(self, name, attributes={}):
        with self.nested("subtest: " + name, attributes):
            yield


LOGGER = Logger()


def retry(fn, timeout_seconds=900):
    """Calls fn(False) once a second until it returns True; a last fn(True),
    then RequestedAssertionFailed (driver's retry)."""
    start_time = time.monotonic()
    while time.monotonic() - start_time < timeout_seconds:
        if fn(False):
            return
        time.sleep(1)
    elapsed = time.monotonic() - start_time
    if not fn(True):
        raise RequestedAssertionFailed(f"action timed out after {elapsed:.2f} seconds (timeout={timeout_seconds})")


class Machine:
    """The running container, with BaseMachine's API."""

    def __init__(self, name, callbacks=None):
        self.name = name
        self.callbacks = callbacks or []
        self.booted = True
        self.connected = True

    def __repr__(self):
        return f"<Machine '{self.name}' (this container)>"

    # --- logging ---
    def log(self, msg):
        LOGGER.log(msg, {"machine": self.name})

    def log_serial(self, msg):
        LOGGER.log_serial(msg, self.name)

    def nested(self, msg, attrs={}):
        return LOGGER.nested(msg, {"machine": self.name, **attrs})

    # --- life cycle: the container is already up ---
    def is_up(self):
        return True

    def start(self, allow_reboot=False):
        self.log("start: this machine is the container the script runs in, booted already")

    def connect(self):
        pass

    def wait_for_shutdown(self):
        raise NotImplementedError("wait_for_shutdown: the script runs inside the machine")

    def release(self):
        pass

    def run_callbacks(self):
        for callback in self.callbacks:
            callback()

    # --- commands ---
    def execute(self, command, check_return=True, check_output=True, timeout=900):
        self.run_callbacks()
        return self._execute(command, check_return, check_output, timeout)

    def _execute(self, command, check_return=True, check_output=True, timeout=900):
        argv = ["bash", "-c", f"set -euo pipefail; {command}"]
        if timeout is not None:
            argv = ["timeout", str(timeout)] + argv
        env = dict(BACKDOOR_ENV)
        if not check_output:
            # The driver sends the command and returns without reading.
            subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd="/tmp", env=env,
                             start_new_session=True)
            return (-2, "")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd="/tmp", env=env)
        out, err = proc.communicate()
        for line in err.decode(errors="replace").splitlines():
            self.log_serial(line)
        if not check_return:
            return (-1, out.decode())
        return (proc.returncode, out.decode(errors="replace"))

    def succeed(self, *commands, timeout=None):
        output = ""
        for command in commands:
            with self.nested(f"must succeed: {command}"):
                (status, out) = self.execute(command, timeout=timeout)
                if status != 0:
                    self.log(f"output: {out}")
                    raise RequestedAssertionFailed(f"command `{command}` failed (exit code {status})")
                output += out
        return output

    def fail(self, *commands, timeout=None):
        output = ""
        for command in commands:
            with self.nested(f"must fail: {command}"):
                (status, out) = self.execute(command, timeout=timeout)
                if status == 0:
                    raise RequestedAssertionFailed(f"command `{command}` unexpectedly succeeded")
                output += out
        return output

    def wait_until_succeeds(self, command, timeout=900):
        output = ""

        def check_success(_last_try):
            nonlocal output
            status, output = self.execute(command, timeout=timeout)
            return status == 0

        with self.nested(f"waiting for success: {command}"):
            retry(check_success, timeout)
            return output

    def wait_until_fails(self, command, timeout=900):
        output = ""

        def check_failure(_last_try):
            nonlocal output
            status, output = self.execute(command, timeout=timeout)
            return status != 0

        with self.nested(f"waiting for failure: {command}"):
            retry(check_failure, timeout)
            return output

    def sleep(self, secs):
        self.succeed(f"sleep {secs}")

    # --- systemd ---
    def systemctl(self, q, user=None):
        if user is not None:
            q = q.replace("'", "\\'")
            return self.execute(f"su -l {user} --shell /bin/sh -c "
                                "$'XDG_RUNTIME_DIR=/run/user/`id -u` "
                                f"systemctl --user {q}'")
        return self.execute(f"systemctl {q}")

    def get_unit_info(self, unit, user=None):
        status, lines = self.systemctl(f'--no-pager show "{unit}"', user)
        if status != 0:
            raise RequestedAssertionFailed(f'retrieving systemctl info for unit "{unit}"'
                                           + ("" if user is None else f' under user "{user}"')
                                           + f" failed with exit code {status}")
        pattern = re.compile(r"^([^=]+)=(.*)$")
        return dict(m.groups() for m in map(pattern.match, lines.split("\n")) if m)

    def get_unit_property(self, unit, property, user=None):
        status, lines = self.systemctl(f'--no-pager show "{unit}" --property="{property}"', user)
        if status != 0:
            raise RequestedAssertionFailed(f'retrieving systemctl property "{property}" for unit "{unit}"'
                                           + ("" if user is None else f' under user "{user}"')
                                           + f" failed with exit code {status}")
        invalid = f'systemctl show --property "{property}" "{unit}"produced invalid output: {lines}'
        match = re.match(r"^([^=]+)=(.*)$", lines)
        assert match is not None, invalid
        assert match[1] == property, invalid
        return match[2]

    def require_unit_state(self, unit, require_state="active"):
        with self.nested(f"checking if unit '{unit}' has reached state '{require_state}'"):
            state = self.get_unit_info(unit)["ActiveState"]
            if state != require_state:
                raise RequestedAssertionFailed(f"Expected unit '{unit}' to to be in state "
                                               f"'{require_state}' but it is in state '{state}'")

    def wait_for_unit(self, unit, user=None, timeout=900):
        def check_active(_last_try):
            state = self.get_unit_property(unit, "ActiveState", user)
            if state == "failed":
                raise RequestedAssertionFailed(f'unit "{unit}" reached state "{state}"')
            if state == "inactive":
                status, jobs = self.systemctl("list-jobs --full 2>&1", user)
                if "No jobs" in jobs:
                    info = self.get_unit_info(unit, user)
                    if info["ActiveState"] == state:
                        raise RequestedAssertionFailed(f'unit "{unit}" is inactive and there are no pending jobs')
            return state == "active"

        with self.nested(f"waiting for unit {unit}" + (f" with user {user}" if user is not None else "")):
            retry(check_active, timeout)

    def start_job(self, jobname, user=None):
        return self.systemctl(f"start {jobname}", user)

    def stop_job(self, jobname, user=None):
        return self.systemctl(f"stop {jobname}", user)

    # --- files and ports ---
    def wait_for_file(self, filename, timeout=900):
        def check_file(_last_try):
            status, _ = self.execute(f"test -e {filename}")
            return status == 0

        with self.nested(f"waiting for file '{filename}'"):
            retry(check_file, timeout)

    def wait_for_open_port(self, port, addr="localhost", timeout=900):
        def port_is_open(_last_try):
            status, _ = self.execute(f"nc -z {addr} {port}")
            return status == 0

        with self.nested(f"waiting for TCP port {port} on {addr}"):
            retry(port_is_open, timeout)

    def wait_for_closed_port(self, port, addr="localhost", timeout=900):
        def port_is_closed(_last_try):
            status, _ = self.execute(f"nc -z {addr} {port}")
            return status != 0

        with self.nested(f"waiting for TCP port {port} on {addr} to be closed"):
            retry(port_is_closed, timeout)

    def wait_for_open_unix_socket(self, addr, is_datagram=False, timeout=900):
        flags = ["-z", "-uU" if is_datagram else "-U"]

        def socket_is_open(_last_try):
            status, _ = self.execute(f"nc {' '.join(flags)} {addr}")
            return status == 0

        with self.nested(f"waiting for UNIX-domain {'datagram' if is_datagram else 'stream'} on '{addr}'"):
            retry(socket_is_open, timeout)

    # --- what a VM has and this container does not ---
    def _unsupported(self, what):
        raise NotImplementedError(f"{what}: not available in the system test container (needs the VM)")

    def shutdown(self):
        self._unsupported("shutdown")

    def crash(self):
        self._unsupported("crash")

    def reboot(self):
        self._unsupported("reboot")

    def block(self):
        self._unsupported("block")

    def unblock(self):
        self._unsupported("unblock")

    def copy_from_host(self, source, target):
        self._unsupported("copy_from_host")

    def copy_from_host_via_shell(self, source, target):
        self._unsupported("copy_from_host_via_shell")

    def copy_from_machine(self, source, target_dir=""):
        self._unsupported("copy_from_machine")

    copy_from_vm = copy_from_machine

    def __getattr__(self, name):
        # screenshot, send_key, send_chars, wait_for_text, wait_for_console_text,
        # send_monitor_command, wait_for_x, forward_port, ...
        if name.startswith("_"):
            raise AttributeError(name)
        self._unsupported(f"machine.{name}")


class AssertionTester(unittest.TestCase):
    """`t` in the test script (driver.py)."""

    failureException = RequestedAssertionFailed

    def runTest(self):  # unittest needs one test method to instantiate
        pass


def apply_skips(script, skips):
    """Replaces each line matching a --skip pattern by a logged SKIP."""
    lines = script.split("\n")
    used = set()
    for n, line in enumerate(lines):
        for pattern, reason in skips:
            if re.search(pattern, line):
                indent = line[: len(line) - len(line.lstrip())]
                lines[n] = f"{indent}_skip({n + 1}, {line.strip()!r}, {reason!r})"
                used.add(pattern)
                break
    for pattern, _ in skips:
        if pattern not in used:
            record("FAIL", f"--skip pattern {pattern!r} matches no line of the script (stale skip)")
    return "\n".join(lines)


def save_journal(out):
    """The whole journal and the units' states, kept with the results."""
    with open(os.path.join(out, "journal.txt"), "w") as f:
        subprocess.run(["journalctl", "--no-pager", "-b", "-o", "short-monotonic"], stdout=f,
                       stderr=subprocess.STDOUT)
    with open(os.path.join(out, "units.txt"), "w") as f:
        subprocess.run(["systemctl", "--no-pager", "list-units", "--all", "--plain", "--no-legend"], stdout=f,
                       stderr=subprocess.STDOUT)
        subprocess.run(["systemctl", "--no-pager", "list-jobs"], stdout=f, stderr=subprocess.STDOUT)


def dump_journals(out):
    """What the runner prints on failure: the journals of failed and Switchboard units."""
    failed = subprocess.run(["systemctl", "--no-pager", "list-units", "--failed", "--plain", "--no-legend"],
                            capture_output=True, text=True).stdout
    names = {line.split()[0] for line in failed.splitlines() if line.strip()}
    names |= {"switchboard-broker.service", "switchboard-auth.service", "switchboard-logger.service",
              "switchboard-mail.service", "switchboard-listener.service", "switchboard-frontend.service"}
    for unit in sorted(names):
        text = subprocess.run(["journalctl", "--no-pager", "-b", "-o", "short-monotonic", "-u", unit],
                              capture_output=True, text=True).stdout
        with open(os.path.join(out, f"journal-{unit}.log"), "w") as f:
            f.write(text)


def main():
    global LOG_FILE
    ap = argparse.ArgumentParser()
    ap.add_argument("--script", required=True)
    ap.add_argument("--node", default="machine")
    ap.add_argument("--out", required=True)
    ap.add_argument("--skip", action="append", default=[], help="REGEX=>reason")
    ap.add_argument("--skip-file", help="lines REGEX=>reason")
    ap.add_argument("--global-timeout", type=int, default=900)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    LOG_FILE = open(os.path.join(args.out, "driver.log"), "w")

    with open(args.script) as f:
        script = f.read()
    entries = list(args.skip)
    if args.skip_file and os.path.exists(args.skip_file):
        with open(args.skip_file) as f:
            entries += [l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")]
    skips = [tuple(x.strip() for x in s.split("=>", 1)) if "=>" in s else (s, "the container cannot")
             for s in entries]
    script = apply_skips(script, skips)

    machine = Machine(args.node)
    current = []

    @contextlib.contextmanager
    def subtest(name):
        current.append(name)
        tic = time.monotonic()
        with LOGGER.subtest(name):
            try:
                yield
            except Exception as e:
                LOGGER.log_test_error(f'Test "{name}" failed with error: "{e}"')
                record("FAIL", f"subtest: {name}: {type(e).__name__}: {e}")
                raise
            finally:
                current.pop()
        record("PASS", f"subtest: {name} ({time.monotonic() - tic:.1f}s)")

    def _skip(lineno, line, reason):
        record("SKIP", f"line {lineno}: {line}  -- {reason}")

    def not_here(what):
        def f(*_a, **_k):
            raise NotImplementedError(f"{what}: not available in the system test container")
        return f

    class Driver:
        machines = [machine]
        vlans = []

    symbols = dict(
        start_all=lambda: machine.start(),
        test_script=None,
        machines=[machine],
        machines_qemu=[machine],
        machines_nspawn=[],
        vlans=[],
        driver=Driver(),
        log=LOGGER,
        os=os,
        create_machine=not_here("create_machine"),
        subtest=subtest,
        run_tests=None,
        join_all=lambda: None,
        retry=retry,
        serial_stdout_off=lambda: None,
        serial_stdout_on=lambda: None,
        polling_condition=not_here("polling_condition"),
        BaseMachine=Machine,
        Machine=Machine,
        t=AssertionTester(),
        _skip=_skip,
        machine=machine,
    )
    symbols[re.sub(r"^[^A-Za-z_]|[^A-Za-z0-9_]", "_", args.node)] = machine

    def on_timeout(_sig, _frame):
        raise MachineError(f"global timeout reached after {args.global_timeout}s")

    signal.signal(signal.SIGALRM, on_timeout)
    signal.alarm(args.global_timeout)
    ok = False
    try:
        with LOGGER.nested("run the VM test script"):
            exec(compile(script, "<testScript>", "exec"), symbols, None)
        ok = True
        record("PASS", "test script ran to the end")
    except Exception as e:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == "<testScript>"]
        code = script.splitlines()
        for frame in frames:
            LOGGER.log_test_error(f"  line {frame.lineno}: {code[frame.lineno - 1].strip()}")
        where = f" (script line {frames[-1].lineno}: {code[frames[-1].lineno - 1].strip()})" if frames else ""
        if not isinstance(e, (TestScriptError, AssertionError)):
            for line in traceback.format_exc().splitlines():
                LOGGER.log_test_error(line)
        record("FAIL", f"test script: {type(e).__name__}: {e}{where}")
    finally:
        signal.alarm(0)
    with open(os.path.join(args.out, "results"), "w") as f:
        f.write("\n".join(RESULTS) + "\n")
    save_journal(args.out)
    if not ok or any(r.startswith("FAIL") for r in RESULTS):
        dump_journals(args.out)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
