"""`chainrunner serve` as a child process, for end-to-end tests and benchmarks.

Starts `python -m chainrunner.serve CHAIN_FILE --port 0 ...`, reads its output on a thread, finds
the gateway's port in the ready line, lists the processes serve started (by pid), and stops it
with a signal, as a user at a terminal would.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

__all__ = ["ServeProcess"]

_READY = re.compile(r"ready in (?P<seconds>[\d.]+)s: POST http://127\.0\.0\.1:(?P<port>\d+)/")


class ServeProcess:
    """One `chainrunner serve` child process and everything it printed."""

    def __init__(self, process: "subprocess.Popen[str]") -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port: int | None = None
        self.launched = time.monotonic()
        self.ready_wall_s: float | None = None  # from launch to the ready line, seen from here

    @classmethod
    def launch(cls, chain_file: Path, *args: str, env: Mapping[str, str] | None = None,
               cwd: Path | None = None, via_cli: bool = False) -> "ServeProcess":
        """Start serve on a free port (`--port 0`); `await_ready` waits for it. `via_cli`:
        as `chainrunner serve` (the whole CLI imported first), not `python -m
        chainrunner.serve`."""
        entry = ["-c", "from chainrunner.cli import main; main(prog_name='chainrunner')",
                 "serve"] if via_cli else ["-m", "chainrunner.serve"]
        command = [sys.executable, *entry, str(chain_file), "--port", "0", *args]
        process = subprocess.Popen(command, env={**os.environ, **(env or {})}, cwd=cwd,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1)
        return cls(process)

    @classmethod
    def start(cls, chain_file: Path, *args: str, env: Mapping[str, str] | None = None,
              cwd: Path | None = None, ready_timeout: float = 120.0) -> "ServeProcess":
        """Start serve and wait for its ready line (raises if it exits first)."""
        served = cls.launch(chain_file, *args, env=env, cwd=cwd)
        try:
            served.await_ready(ready_timeout)
        except BaseException:
            served.stop(signal.SIGKILL)
            raise
        return served

    def await_ready(self, timeout: float) -> None:
        match = self.wait_for(_READY, timeout)
        self.ready_wall_s = time.monotonic() - self.launched
        self.port = int(match["port"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        with self._changed:  # a reentrant lock: wait_for reads it while holding it
            return "\n".join(self.lines)

    def wait_for(self, pattern: "re.Pattern[str] | str", timeout: float,
                 after: int = 0) -> "re.Match[str]":
        """The first output line from index `after` on that matches `pattern`."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = after
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self.process.poll() is not None and not self._reader.is_alive():
                    raise RuntimeError(f"serve exited with {self.process.returncode} before "
                                       f"printing /{regex.pattern}/:\n{self.output}")
                if left <= 0:
                    raise TimeoutError(f"no /{regex.pattern}/ in serve's output within "
                                       f"{timeout}s:\n{self.output}")
                self._changed.wait(min(left, 0.5))

    def descendants(self) -> set[int]:
        """Pids of every process serve started (zygote, chainlets, builder) that is running."""
        try:
            return {p.pid for p in psutil.Process(self.process.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            return set()

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal serve (SIGTERM or SIGINT, as Ctrl-C) and wait for it to exit."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(5)
        if self.process.stdout is not None and not self._reader.is_alive():
            self.process.stdout.close()
        return code

    @staticmethod
    def alive(pids: Sequence[int] | set[int]) -> set[int]:
        """Those of `pids` that still exist and are not zombies."""
        alive = set()
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.add(pid)
        return alive

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()
