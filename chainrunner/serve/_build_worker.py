"""Builder process: `truss chains push --dryrun`, then `truss image build-context` per chainlet.

Run as a script (`python -P _build_worker.py PARENT_PID`), never imported: the chain must be
imported in a clean interpreter, as the truss CLI does, so this file imports nothing from the
project. It
serves requests, one JSON object a line on stdin, and answers each with one JSON line on stdout:
`{"ok": {...chain, chainlets, input dirs...}}` or `{"error": "..."}`. It stays up between
requests (serve --watch) so that truss and the chain's third-party imports stay loaded; the
chain's own modules are imported afresh each time. The parent sets HOME and TMPDIR inside the
project's state directory, so truss's `.chains_generated` and gathered trusses land there.
"""

import hashlib
import importlib
import importlib.util
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import sysconfig
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TextIO

_SKIPPED_PARTS = {"__pycache__", "build_hash"}
# Where the project's chainlets read the pushing machine's environment (`deploy.host_env`).
_DEPLOY_MODULE = "chainlets.deploy"
_LIBRARY_DIRS = tuple({sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib")})


class ChainLayoutError(Exception):
    """Raised when the chain's files are laid out so that a push would ship serve's state."""


def _digest(app_dir: Path, packages_dir: Path) -> str:
    """Content hash of what a chainlet process runs; truss's random model name is left out."""
    sha = hashlib.sha256()
    for root in (app_dir, packages_dir):
        for path in sorted(root.rglob("*")):
            if not path.is_file() or _SKIPPED_PARTS & set(path.parts):
                continue
            data = path.read_bytes()
            if path == app_dir / "config.yaml":
                data = b"\n".join(line for line in data.splitlines()
                                  if not line.startswith(b"model_name:"))
            sha.update(str(path.relative_to(root.parent)).encode() + b"\0" + data + b"\0")
    return sha.hexdigest()[:16]


def _library_modules(names: set[str]) -> set[str]:
    """Top-level names of those modules that come from site-packages or the standard library."""
    tops = set()
    for name in names:
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        if file and file.startswith(_LIBRARY_DIRS):
            tops.add(name.partition(".")[0])
    return tops


def _context(name: str, display_name: str, truss_dir: Path, context: Path) -> dict[str, Any]:
    """What `truss image build-context` does for one generated truss (gathering its external
    package dirs into packages/, as a push does), laid out like the image: /app holds the
    server code, model/ and config.yaml."""
    from truss.base.truss_config import TrussConfig
    from truss.truss_handle.truss_handle import TrussHandle

    config = TrussConfig.from_yaml(truss_dir / "config.yaml")
    TrussHandle(truss_dir).docker_build_setup(build_dir=context)
    app_dir = context / "server"
    shutil.move(context / "model", app_dir / "model")
    shutil.move(context / "config.yaml", app_dir / "config.yaml")
    shutil.rmtree(context / "build_hash", ignore_errors=True)
    return {
        "name": name,
        "display_name": display_name,
        "context_dir": str(context),
        "dependencies": sorted(config.model_metadata["chains_metadata"]["chainlet_to_service"]),
        "secrets": sorted(config.secrets),
        "env": dict(config.environment_variables),
        "digest": _digest(app_dir, context / "packages"),
        "external_package_dirs": [str(Path(p).resolve()) for p in config.external_package_dirs],
    }


def _build(source: Path, staging: Path, state_dir: Path,
           warmed: frozenset[str] = frozenset()) -> tuple[dict[str, Any], set[str]]:
    """Build every chainlet; returns the manifest and the library modules the chain imports
    (`warmed`: those an earlier build of it imported, loaded again since)."""
    from truss_chains import framework, private_types
    from truss_chains.deployment import deployment_client

    before = set(sys.modules)
    with framework.ChainletImporter.import_target(source) as entrypoint_cls:
        # Truss unloads what the import loaded when the block ends: note the libraries now.
        libraries = _library_modules(set(sys.modules) - before) | warmed
        host_env = sorted(getattr(sys.modules.get(_DEPLOY_MODULE), "HOST_ENV_READ", ()))
        chain_root = Path(deployment_client._get_chain_root(entrypoint_cls)).resolve()
        if state_dir.resolve().is_relative_to(chain_root):
            raise ChainLayoutError(
                f"the chain root `{chain_root}` (the folder of the file that defines the "
                f"entrypoint; truss ships all of it with every chainlet) contains serve's state "
                f"directory `{state_dir}`: move the chain file into a subfolder such as chains/")
        chain_name = entrypoint_cls.meta_data.chain_name or entrypoint_cls.display_name
        options = private_types.PushOptionsBaseten.create(
            chain_name=chain_name, publish=True, promote=False, only_generate_trusses=True,
            remote="", include_git_info=False, working_dir=source.parent)
        # Exactly what `truss chains push --dryrun` runs: one generated truss per chainlet.
        entry, deps, _, _ = deployment_client._generate_chainlet_artifacts(
            options, entrypoint_cls)

    artifacts = [*deps, entry]
    # Building contexts is CPU-bound (YAML, templates, copies): one forked process each.
    with ProcessPoolExecutor(max_workers=min(len(artifacts), os.cpu_count() or 1),
                             mp_context=multiprocessing.get_context("fork")) as pool:
        chainlets = list(pool.map(_context, [a.name for a in artifacts],
                                  [a.display_name for a in artifacts],
                                  [Path(a.truss_dir) for a in artifacts],
                                  [staging / a.display_name for a in artifacts]))
    inputs = {str(chain_root)}
    for chainlet in chainlets:
        inputs.update(chainlet.pop("external_package_dirs"))
    manifest = {"chain_name": chain_name, "entrypoint": entry.display_name,
                "chainlets": chainlets, "inputs": sorted(inputs),
                "libraries": sorted(libraries), "host_env": host_env}
    return manifest, libraries


def _describe(exc: BaseException) -> str:
    """The error with the traceback frames of the user's code (not truss's, not the stdlib's)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(_LIBRARY_DIRS) and "<frozen" not in f.filename
              and f.filename != __file__]
    stack = "".join(traceback.format_list(frames)) if frames else ""
    return stack + "".join(traceback.format_exception_only(exc)).rstrip()


def _warm(modules: set[str]) -> None:
    """Re-import library modules the chain needed (truss unloads them after each import)."""
    for name in sorted(modules - set(sys.modules)):
        try:
            importlib.import_module(name)
        except Exception as exc:  # only a lost speed-up: the next build imports it itself
            print(f"build worker: not keeping `{name}` loaded: {exc!r}", file=sys.stderr)


def serve_requests(requests: TextIO, replies: TextIO) -> None:
    warmed: frozenset[str] = frozenset()
    for line in requests:
        request = json.loads(line)
        try:
            manifest, libraries = _build(Path(request["source"]).resolve(),
                                         Path(request["staging"]), Path(request["state_dir"]),
                                         warmed)
            reply: dict[str, Any] = {"ok": manifest}
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit from a chain's import is its error message
            reply, libraries = {"error": _describe(exc)}, set(warmed)
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
        _warm(libraries)
        warmed = frozenset(libraries)


def _die_with_parent(parent_pid: int) -> None:
    """Never outlive serve, even if it is killed outright (see _lifeline.py)."""
    spec = importlib.util.spec_from_file_location("_chainrunner_lifeline",
                                                  Path(__file__).with_name("_lifeline.py"))
    assert spec is not None and spec.loader is not None
    lifeline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lifeline)
    lifeline.die_with_parent(parent_pid)


def main(argv: list[str]) -> int:
    _die_with_parent(int(argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # serve ends it by closing its input
    # Truss formats generated code by running `ruff`, found through PATH.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    logging.basicConfig(level=logging.WARNING)
    # Whatever truss prints goes to stderr; stdout carries only replies.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve_requests(sys.stdin, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
