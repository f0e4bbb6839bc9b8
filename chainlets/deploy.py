"""Deployment settings shared by every chainlet: image, shipped code, requirements, resources."""

import contextlib
import hashlib
import os
from importlib.metadata import version
from pathlib import Path

import truss_chains as chains

__all__ = ["SERVICE_SECRETS", "SHIP_DIR", "cpu_service", "host_env", "image"]

# Truss secrets the runner reads (each overrides the environment variable of the same name in
# upper case): where the store is, the key callbacks are signed with, and (optional; else
# derived from the webhook secret) the key approval steps' task tokens are derived with.
SERVICE_SECRETS = ("chainrunner_database_url", "chainrunner_webhook_secret",
                   "chainrunner_task_token_secret")

# The chainlets' own runtime imports, pinned to what this checkout runs and tests with (the
# store's: SQLAlchemy with greenlet for its asyncio engine, psycopg, alembic; structured
# output's: jsonschema with the packages it imports, so that pip resolves none of them anew).
_RUNTIME = ("pydantic", "httpx", "openai", "standardwebhooks", "sqlalchemy", "greenlet",
            "psycopg", "psycopg-binary", "alembic", "jsonschema", "jsonschema-specifications",
            "referencing", "rpds-py", "attrs")

# Truss ships the directory of the file that defines the entrypoint (for us `chains/`) and the
# *contents* of each external package dir. A chainlet gets our whole `chainlets` package, which
# holds only what chainlets run (local tooling lives in `chainrunner`), and nothing else: not
# tests/, benchmarks/ or the rest of a repository, not the rest of a site-packages. The external
# dir is therefore a folder of its own whose one entry is a link to this package: truss copies
# through a top-level link (it leaves a link *inside* a package empty, so the package itself
# must hold real files). Truss wants external package dirs named `packages`.
_PACKAGE = Path(__file__).resolve().parent


def _ship_dir() -> Path:
    """`…/packages/`, holding only a link named `chainlets` to this package.

    Deployed, the package already sits alone in truss's `packages/`; locally (a checkout or a
    site-packages install) the folder is made once under the user's cache, one per package
    location. Paths are only read when a truss is generated, so a read-only home is no error
    here: generation then reports the missing folder.
    """
    if _PACKAGE.parent.name == "packages":
        return _PACKAGE.parent
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(str(_PACKAGE).encode()).hexdigest()[:16]
    folder = cache / "chainrunner" / "ship" / digest / "packages"
    link = folder / _PACKAGE.name
    with contextlib.suppress(OSError):
        if link.resolve() != _PACKAGE:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{_PACKAGE.name}.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(_PACKAGE, target_is_directory=True)
            tmp.replace(link)  # atomic: concurrent pushes never see a half-made link
    return folder


SHIP_DIR = _ship_dir()
# What `chains.make_abs_path_here` returns, without its walk of the whole call stack, which
# costs every chainlet process 0.2 s at start.
_SHIPPED = chains.public_types.AbsPath(str(SHIP_DIR), __name__, str(SHIP_DIR))
_PINS = [f"{name}=={version(name)}" for name in _RUNTIME]
# Every name `host_env` was asked for in this process: serve's builder reports them, so that a
# changed value invalidates the trusses it baked into (chainrunner/serve/artifacts.py).
HOST_ENV_READ: set[str] = set()


def image(*extra_requirements: str) -> chains.DockerImage:
    """The image every chainlet runs in: our runtime dependencies pinned, `chainlets` shipped.

    `extra_requirements` must be pinned (`name==version`) like the rest.
    """
    return chains.DockerImage(pip_requirements=[*_PINS, *extra_requirements],
                              external_package_dirs=[_SHIPPED])


def cpu_service(memory: str = "1Gi", concurrency: int = 256) -> chains.Compute:
    """Small CPU service; I/O-bound async chainlets take many requests at once."""
    return chains.Compute(cpu_count=1, memory=memory, predict_concurrency=concurrency)


def host_env(*names: str) -> dict[str, str]:
    """The pushing machine's values of those of `names` that are set, to bake into a chainlet.

    For optional settings such as `OPENAI_BASE_URL`: unset stays unset (an empty value would
    override the library's default).
    """
    HOST_ENV_READ.update(names)
    return {name: os.environ[name] for name in names if os.environ.get(name)}
