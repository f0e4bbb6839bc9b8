"""Deployment settings shared by every chainlet: image, shipped code, requirements, resources."""

import os
from importlib.metadata import version
from pathlib import Path

import truss_chains as chains

__all__ = ["cpu_service", "host_env", "image"]

# The chainlets' own runtime imports, pinned to what this checkout runs and tests with.
_RUNTIME = ("pydantic", "httpx", "openai")

# Truss ships the directory of the file that defines the entrypoint (for us `chains/`) and the
# *contents* of each external package dir. `shipped/chainlets/packages/chainlets/` mirrors our
# package with links, so a chainlet gets exactly `chainlets/`, never
# tests/, benchmarks/ or the rest of the repository, nor `chainlets/serve/` (the local serve
# command; no chainlet imports it). Folders there are real and files are links: truss copies
# through a linked file but leaves a linked folder inside a package empty. A new module needs
# its link (tests/test_push.py says which). Truss wants external package dirs named
# `packages` (a chain downloaded from Baseten may not import them otherwise). Paths are checked
# only when a truss is generated, so importing this module inside a deployed chainlet (where
# shipped/ is absent) is fine. These are what `chains.make_abs_path_here` returns, without its
# walk of the whole call stack, which costs every chainlet process 0.2 s at start.
_SHIPPED_ROOT = Path(__file__).resolve().parent.parent / "shipped"
_SHIPPED = chains.public_types.AbsPath(str(_SHIPPED_ROOT / "chainlets" / "packages"),
                                      __name__, "../shipped/chainlets/packages")
_PINS = [f"{name}=={version(name)}" for name in _RUNTIME]
# Every name `host_env` was asked for in this process: serve's builder reports them, so that a
# changed value invalidates the trusses it baked into (chainlets/serve/artifacts.py).
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
