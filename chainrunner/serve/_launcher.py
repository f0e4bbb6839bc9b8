"""Inside a chainlet process: adapt truss's server to a local, unprivileged run, then start it.

Loaded by the zygote (by path, never as part of the `chainlets` package, so the chainlet imports
the project's code from its own packages/ only). Truss's server hard-codes things that suit a
container, not a laptop; each is changed here, in this process's memory, never on disk:

- it binds 0.0.0.0: we bind 127.0.0.1 (and keep idle connections longer than callers do);
- it checks no key (Baseten's proxy does): with serve's API key set, _asgi.py checks serve's
  internal key on every request, and it keeps a connection open after an error whose answer
  was sent (uvicorn would close it under a caller about to reuse it);
- a body nested deeper than its JSON parser recurses is an unhandled RecursionError (500, and a
  closed connection): we answer 400 naming the limit;
- dependency URLs come from `/etc/b10_dynamic_config`: we read this process's own state dir;
- secrets are read from `/secrets`: only `TRUSS_SECRET_<name>` variables apply;
- a failed load is marked in `~/inference_server_crashed.txt`: that goes to the state dir too;
- a dependency that does not answer raises a bare connection error: we name the chainlet, as
  truss does for HTTP errors from a deployed dependency.
"""

import functools
import importlib
import importlib.util
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

DYNAMIC_CONFIG_DIR = "dynamic_config"
# Callers (truss's stub client, serve's gateway) keep idle connections up to 15 s; uvicorn's
# default 5 s would close them under a caller about to reuse one ("Server disconnected").
# Deployed, a proxy sits in between; here the server must simply outlast its clients.
_KEEP_ALIVE_S = 75


class ChainletUnreachableError(ConnectionError):
    """Raised in a chainlet when a dependency chainlet does not answer on its loopback port."""


def _unreachable(stub: Any, exc: Exception) -> ChainletUnreachableError:
    return ChainletUnreachableError(
        f"Error calling dependency Chainlet `{stub.name}`: nothing answers at "
        f"{stub._target_url} ({type(exc).__name__}: {exc}); chainrunner serve restarts "
        "chainlets that exit")


def _name_unreachable_dependencies() -> None:
    aiohttp = importlib.import_module("aiohttp")
    stub_base = importlib.import_module("truss_chains.remote_chainlet.stub").StubBase
    predict_async: Callable[..., Awaitable[Any]] = stub_base.predict_async
    predict_async_stream: Callable[..., Awaitable[AsyncIterator[bytes]]] = (
        stub_base.predict_async_stream)

    @functools.wraps(predict_async)
    async def named_predict_async(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await predict_async(self, *args, **kwargs)
        except aiohttp.ClientConnectionError as exc:
            raise _unreachable(self, exc) from exc

    @functools.wraps(predict_async_stream)
    async def named_predict_async_stream(self: Any, *args: Any,
                                         **kwargs: Any) -> AsyncIterator[bytes]:
        try:
            return await predict_async_stream(self, *args, **kwargs)
        except aiohttp.ClientConnectionError as exc:
            raise _unreachable(self, exc) from exc

    stub_base.predict_async = named_predict_async
    stub_base.predict_async_stream = named_predict_async_stream

    httpx = importlib.import_module("httpx")
    predict_sync: Callable[..., Any] = stub_base.predict_sync

    @functools.wraps(predict_sync)
    def named_predict_sync(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return predict_sync(self, *args, **kwargs)
        except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
            raise _unreachable(self, exc) from exc

    stub_base.predict_sync = named_predict_sync


def _asgi() -> Any:
    """_asgi.py beside this file, by path (this file is loaded by path, not as a package)."""
    spec = importlib.util.spec_from_file_location("_chainrunner_asgi",
                                                  Path(__file__).with_name("_asgi.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _serve_loopback(key: str | None) -> None:
    uvicorn: Any = importlib.import_module("uvicorn")
    config_cls = uvicorn.Config
    chainlet_app = _asgi().ChainletApp

    class LoopbackConfig(config_cls):  # type: ignore[misc,valid-type]  # uvicorn's Config
        def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
            kwargs["host"] = "127.0.0.1"
            kwargs.setdefault("timeout_keep_alive", _KEEP_ALIVE_S)
            super().__init__(chainlet_app(app, key), *args, **kwargs)

    uvicorn.Config = LoopbackConfig


def _name_deep_bodies(truss_server: Any) -> None:
    """A body too deeply nested for the JSON parser is the client's error: 400, not 500."""
    endpoints = truss_server.BasetenEndpoints
    parse_body: Callable[..., Awaitable[Any]] = endpoints._parse_body

    @functools.wraps(parse_body)
    async def parse_body_or_400(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await parse_body(self, *args, **kwargs)
        except RecursionError:
            raise truss_server.errors.InputParsingError(
                "Input Parsing Error: the JSON body is nested deeper than the server's JSON "
                f"parser goes (Python's recursion limit, {sys.getrecursionlimit()} levels, "
                "less what the server itself uses); send a flatter body") from None

    endpoints._parse_body = parse_body_or_400


def _drop_editable_finders() -> None:
    """An editable install of the project must not stand in for code missing from packages/."""
    sys.meta_path[:] = [f for f in sys.meta_path
                        if not getattr(f, "__module__", "").startswith("__editable__")]


def run(spec: Mapping[str, Any]) -> NoReturn:
    """Serve one chainlet: `spec` has app_dir, packages_dir, state_dir, port, and `key` (serve's
    internal key, which every request must carry) when serve has an API key."""
    app_dir, state_dir = Path(spec["app_dir"]), Path(spec["state_dir"])
    os.chdir(app_dir)
    sys.path[:0] = [str(app_dir), spec["packages_dir"]]
    _drop_editable_finders()
    _serve_loopback(spec.get("key"))
    _name_unreachable_dependencies()
    for name in ("_truss_shared.dynamic_config_resolver",  # the server's copy
                 "truss.templates.shared.dynamic_config_resolver"):  # truss_chains' copy
        resolver: Any = importlib.import_module(name)
        resolver.DYNAMIC_CONFIG_MOUNT_DIR = str(state_dir / DYNAMIC_CONFIG_DIR)
    secrets: Any = importlib.import_module("_truss_shared.secrets_resolver")
    secrets.SecretsResolver.SECRETS_MOUNT_DIR = str(state_dir / "secrets")
    truss_server: Any = importlib.import_module("truss_server")
    truss_server.INFERENCE_SERVER_FAILED_FILE = state_dir / "inference_server_crashed.txt"
    _name_deep_bodies(truss_server)
    truss_server.TrussServer(int(spec["port"]), "config.yaml").start()
    sys.exit(0)
