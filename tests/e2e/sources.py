"""Chain files the end-to-end tests serve from a throwaway project (Python source text)."""

__all__ = ["BROKEN_CHAIN", "GREET_CHAIN", "SECRETS_CHAIN", "SLOW_CHAIN", "SLOW_RESTART_CHAIN",
           "SLOW_START_CHAIN"]

GREET_CHAIN = '''
import asyncio

import truss_chains as chains

from chainlets import deploy


class Greeter(chains.ChainletBase):
    remote_config = chains.RemoteConfig(docker_image=deploy.image(),
                                        compute=deploy.cpu_service())

    async def run_remote(self, name: str) -> str:
        return f"Hello, {name}"


@chains.mark_entrypoint
class GreetAll(chains.ChainletBase):
    remote_config = chains.RemoteConfig(docker_image=deploy.image(),
                                        compute=deploy.cpu_service())

    def __init__(self, greeter: Greeter = chains.depends(Greeter)) -> None:
        self._greeter = greeter

    async def run_remote(self, names: list[str]) -> str:
        return ", ".join(await asyncio.gather(*(self._greeter.run_remote(n) for n in names)))
'''

BROKEN_CHAIN = '''
import truss_chains as chains

from chainlets import deploy


class Doomed(chains.ChainletBase):
    remote_config = chains.RemoteConfig(docker_image=deploy.image())

    def __init__(self) -> None:
        raise RuntimeError("doomed on purpose")

    async def run_remote(self, text: str) -> str:
        return text


@chains.mark_entrypoint
class Front(chains.ChainletBase):
    remote_config = chains.RemoteConfig(docker_image=deploy.image())

    def __init__(self, doomed: Doomed = chains.depends(Doomed)) -> None:
        self._doomed = doomed

    async def run_remote(self, text: str) -> str:
        return await self._doomed.run_remote(text)
'''


SLOW_START_CHAIN = '''
import time

import truss_chains as chains

from chainlets import deploy


@chains.mark_entrypoint
class Sleepy(chains.ChainletBase):
    remote_config = chains.RemoteConfig(docker_image=deploy.image())

    def __init__(self) -> None:
        print("sleepy: loading for two minutes", flush=True)
        time.sleep(120)

    async def run_remote(self, text: str) -> str:
        return text
'''


SLOW_RESTART_CHAIN = '''
import os
import time

import truss_chains as chains

from chainlets import deploy


@chains.mark_entrypoint
class Greet(chains.ChainletBase):
    remote_config = chains.RemoteConfig(docker_image=deploy.image())

    def __init__(self) -> None:
        if os.path.exists(os.environ["E2E_SLOW_START_MARKER"]):
            time.sleep(5)

    async def run_remote(self, name: str) -> str:
        return f"Hello, {name}"
'''


SLOW_CHAIN = '''
import asyncio

import truss_chains as chains

from chainlets import deploy


@chains.mark_entrypoint
class Slow(chains.ChainletBase):
    remote_config = chains.RemoteConfig(docker_image=deploy.image(),
                                        compute=deploy.cpu_service())

    async def run_remote(self, seconds: float) -> str:
        print(f"slow: sleeping {seconds}s", flush=True)
        await asyncio.sleep(seconds)
        return f"slept {seconds}s"
'''


SECRETS_CHAIN = '''
import os

import truss_chains as chains

from chainlets import deploy


def credentials() -> list[str]:
    """Names of this process's variables whose value is one of the test's credentials."""
    return sorted(name for name, value in os.environ.items() if "e2e-credential" in value)


class Holder(chains.ChainletBase):
    remote_config = chains.RemoteConfig(docker_image=deploy.image(),
                                        assets=chains.Assets(secret_keys=["e2e_token"]))

    def __init__(self, context: chains.DeploymentContext = chains.depends_context()) -> None:
        self._token = context.secrets["e2e_token"]

    async def run_remote(self) -> list[str]:
        return [f"secret={self._token}", *credentials()]


@chains.mark_entrypoint
class Peer(chains.ChainletBase):
    remote_config = chains.RemoteConfig(docker_image=deploy.image())

    def __init__(self, holder: Holder = chains.depends(Holder)) -> None:
        self._holder = holder

    async def run_remote(self) -> list[str]:
        return [*(f"Holder {seen}" for seen in await self._holder.run_remote()),
                *(f"Peer {seen}" for seen in credentials())]
'''
