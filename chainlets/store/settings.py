"""The store's settings, read from the environment: size limits, retention, lease length."""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chainlets.errors import ConfigurationError, PayloadTooLargeError

__all__ = [
    "DATABASE_URL_ENV",
    "LEASE_ENV",
    "MAX_CHAIN_ENV",
    "MAX_INPUT_ENV",
    "MAX_STEP_OUTPUT_ENV",
    "RETENTION_ENV",
    "SYNC_ENV",
    "Limits",
    "StoreSettings",
]

DATABASE_URL_ENV = "CHAINRUNNER_DATABASE_URL"
MAX_INPUT_ENV = "CHAINRUNNER_MAX_INPUT_BYTES"
MAX_STEP_OUTPUT_ENV = "CHAINRUNNER_MAX_STEP_OUTPUT_BYTES"
MAX_CHAIN_ENV = "CHAINRUNNER_MAX_CHAIN_BYTES"
RETENTION_ENV = "CHAINRUNNER_RETENTION_DAYS"
LEASE_ENV = "CHAINRUNNER_LEASE_S"
SYNC_ENV = "CHAINRUNNER_DB_SYNC"
SYNC_MODES = ("full", "normal")

_MIB = 1024 * 1024
_DAY = 86_400.0


def _too_large(what: str, size: int, limit: int, env: str) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"{what} is {size:,} bytes, over the limit of {limit:,} bytes set by {env}; "
        f"make it smaller or raise {env}")


def json_size(value: Any) -> int:
    """Bytes of `value` as compact JSON, as it is stored."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


@dataclass(frozen=True)
class Limits:
    """Largest payloads the store accepts, in bytes (UTF-8)."""

    max_input_bytes: int = _MIB
    max_step_output_bytes: int = _MIB
    max_chain_bytes: int = _MIB

    def check_input(self, inputs: Mapping[str, Any]) -> None:
        size = json_size(inputs)
        if size > self.max_input_bytes:
            raise _too_large("the input", size, self.max_input_bytes, MAX_INPUT_ENV)

    def check_chain(self, chain: Mapping[str, Any]) -> None:
        size = json_size(chain)
        if size > self.max_chain_bytes:
            raise _too_large("the chain", size, self.max_chain_bytes, MAX_CHAIN_ENV)

    def check_output(self, handle: str | None, output: str | None) -> None:
        if output is None:
            return
        size = len(output.encode())
        if size > self.max_step_output_bytes:
            what = f"step `{handle}`: the output" if handle else "the output"
            raise _too_large(what, size, self.max_step_output_bytes, MAX_STEP_OUTPUT_ENV)


def _number(env: Mapping[str, str], name: str, default: float, *, integer: bool) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = -1
    if value <= 0:
        kind = "a positive whole number" if integer else "a positive number"
        raise ConfigurationError(f"{name}={raw!r} is not valid; set it to {kind} "
                               f"(default {default:g})")
    return value


@dataclass(frozen=True)
class StoreSettings:
    """Everything configurable about the store; `from_env` reads the documented variables."""

    url: str | None = None
    limits: Limits = field(default_factory=Limits)
    retention_s: float = 7 * _DAY
    lease_s: float = 10.0
    # How hard a commit is: `full` fsyncs every commit; `normal` survives any crash of a
    # process but not of the database's host (SQLite synchronous=NORMAL in WAL, PostgreSQL
    # synchronous_commit=off). None: SQLite `normal`, PostgreSQL the server's own setting.
    sync: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "StoreSettings":
        env = os.environ if env is None else env
        limits = Limits(
            max_input_bytes=int(_number(env, MAX_INPUT_ENV, _MIB, integer=True)),
            max_step_output_bytes=int(_number(env, MAX_STEP_OUTPUT_ENV, _MIB, integer=True)),
            max_chain_bytes=int(_number(env, MAX_CHAIN_ENV, _MIB, integer=True)))
        sync = env.get(SYNC_ENV, "").strip().lower() or None
        if sync is not None and sync not in SYNC_MODES:
            raise ConfigurationError(f"{SYNC_ENV}={env[SYNC_ENV]!r} is not valid; set it to "
                                   "`full` (fsync every commit) or `normal` (survive process "
                                   "crashes, not a power cut), or leave it unset")
        return cls(url=env.get(DATABASE_URL_ENV) or None, limits=limits,
                   retention_s=_number(env, RETENTION_ENV, 7, integer=False) * _DAY,
                   lease_s=_number(env, LEASE_ENV, 10, integer=False), sync=sync)
