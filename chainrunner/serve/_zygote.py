"""Fork server for chainlet processes: loads truss's server stack once, forks one child a chainlet.

Run as a script (`python -P _zygote.py CONTROL_FD PARENT_PID`), never imported, and imports
nothing from the project: a chainlet must import the project's code from its own packages/.
Starting a chainlet this way costs a fork instead of a fresh interpreter importing fastapi,
uvicorn, opentelemetry and truss, which is what makes serve start, and --watch reload, fast.

Messages are JSON, one per datagram on a SOCK_SEQPACKET socket. Requests:
  {"op": "preload", "modules": [...]}                   import more library modules
  {"op": "spawn", "id": N, "spec": {...}} + one fd      fork a chainlet; the fd is its log pipe
  {"op": "signal", "pid": P, "signal": S}               signal a chainlet this zygote started
Events: {"op": "spawned", "id": N, "pid": P}, {"op": "exited", "pid": P, "returncode": R}
(negative R: killed by signal -R), {"op": "error", "id": N, "message": "..."}.
The zygote dies with its parent, and its chainlets die with it (PR_SET_PDEATHSIG); when the
control socket closes it kills the chainlets it started and exits.
"""

import contextlib
import ctypes
import gc
import importlib
import importlib.util
import inspect
import json
import os
import selectors
import signal
import socket
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, NoReturn

# What truss's server and truss_chains' runtime import: loaded once, here.
BASE_PRELOAD = (
    "uvicorn", "uvloop", "fastapi", "starlette", "pydantic", "yaml", "aiohttp", "aiofiles",
    "httpx", "prometheus_client", "psutil", "pythonjsonlogger.jsonlogger", "msgpack",
    "opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "truss_chains", "truss_chains.remote_chainlet.stub", "truss_chains.remote_chainlet.utils",
    "truss.templates.shared.dynamic_config_resolver",
    "truss.templates.shared.secrets_resolver", "truss.templates.shared.lazy_data_resolver",
)
_PR_SET_NAME = 15


def _set_name(name: str) -> None:
    """What `ps -o comm` and `top` show (15 bytes at most)."""
    ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def _load(name: str) -> Any:
    """A sibling module, by path (this script's folder is not on sys.path: `python -P`)."""
    spec = importlib.util.spec_from_file_location(f"_chainrunner{name}",
                                                  Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_die_with_parent = _load("_lifeline").die_with_parent


def _preload(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a chainlet that needs it imports it itself, and fails there
            print(f"zygote: not preloading `{name}`: {exc!r}", file=sys.stderr, flush=True)
    # inspect.getmodule (truss validates every chainlet class with it) scans all of
    # sys.modules on its first miss; do it here once, not in every chainlet.
    inspect.getmodule(_preload.__code__)
    # Everything loaded so far lives as long as the chainlets: keep the collector from
    # walking it in every chainlet (and from dirtying its shared pages while it does).
    gc.collect()
    gc.freeze()
    if threading.active_count() > 1 or len(os.listdir("/proc/self/task")) > 1:
        print("zygote: a preloaded module started a thread; forked chainlets may deadlock",
              file=sys.stderr, flush=True)


def _child(spec: dict[str, Any], log_fd: int, zygote_pid: int, launcher: Any,
           control: socket.socket) -> NoReturn:
    control.detach()  # closed below by number; the object must not close a reused number later
    try:
        os.setsid()  # its own process group: a terminal's Ctrl-C reaches serve, not chainlets
        _die_with_parent(zygote_pid)
        _set_name(spec["name"])
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        for fd in [int(f) for f in os.listdir("/proc/self/fd")]:
            if fd > 2:
                with contextlib.suppress(OSError):  # the listing's own descriptor is gone
                    os.close(fd)
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        os.environ.clear()
        os.environ.update(spec["env"])
        launcher.run(spec)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 70
    # Never run the zygote's interpreter shutdown (atexit, finalizers) in a chainlet.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _Zygote:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.children: set[int] = set()
        self.launcher = _load("_launcher")
        self.pid = os.getpid()

    def send(self, message: dict[str, Any]) -> None:
        self.control.send(json.dumps(message).encode())

    def handle(self, message: dict[str, Any], fds: list[int]) -> None:
        op = message["op"]
        if op == "preload":
            _preload(message["modules"])
        elif op == "spawn":
            if len(fds) != 1:
                self.send({"op": "error", "id": message["id"], "message": "no log pipe sent"})
                return
            pid = os.fork()
            if pid == 0:
                _child(message["spec"], fds[0], self.pid, self.launcher, self.control)
            os.close(fds[0])
            self.children.add(pid)
            self.send({"op": "spawned", "id": message["id"], "pid": pid})
        elif op == "signal" and message["pid"] in self.children:
            # Only ever a process this zygote started and has not reaped.
            os.kill(message["pid"], message["signal"])
        for fd in fds if op != "spawn" else []:
            os.close(fd)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send({"op": "exited", "pid": pid, "returncode": os.waitstatus_to_exitcode(status)})

    def shut_down(self) -> NoReturn:
        for pid in self.children:
            os.kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            os.waitpid(pid, 0)
        os._exit(0)

    def loop(self) -> NoReturn:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        selector = selectors.DefaultSelector()
        selector.register(self.control, selectors.EVENT_READ)
        selector.register(wake_r, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj == wake_r:
                    os.read(wake_r, 4096)
                    self.reap()
                    continue
                data, fds, _, _ = socket.recv_fds(self.control, 1 << 20, 4)
                if not data:
                    self.shut_down()
                self.handle(json.loads(data), fds)


def main(argv: list[str]) -> NoReturn:
    control_fd, parent_pid = int(argv[1]), int(argv[2])
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # serve stops its chainlets in order
    control = socket.socket(fileno=control_fd)
    _preload(list(BASE_PRELOAD))
    zygote = _Zygote(control)
    zygote.send({"op": "ready"})
    zygote.loop()


if __name__ == "__main__":
    main(sys.argv)
