"""The seed's hello chain: an entrypoint fanning out to a SayHello chainlet per name."""

import asyncio

import truss_chains as chains

from chainlets import deploy


class SayHello(chains.ChainletBase):
    """Greets one name."""

    remote_config = chains.RemoteConfig(docker_image=deploy.image(),
                                        compute=deploy.cpu_service(memory="512Mi"))

    async def run_remote(self, name: str) -> str:
        return f"Hello, {name}"


@chains.mark_entrypoint
class HelloAll(chains.ChainletBase):
    """Greets every name, concurrently."""

    remote_config = chains.RemoteConfig(docker_image=deploy.image(),
                                        compute=deploy.cpu_service(memory="512Mi"))

    def __init__(self, say_hello_chainlet: SayHello = chains.depends(SayHello)) -> None:
        self._say_hello = say_hello_chainlet

    async def run_remote(self, names: list[str]) -> str:
        greetings = await asyncio.gather(*(self._say_hello.run_remote(n) for n in names))
        return "\n".join(greetings)


if __name__ == "__main__":
    async def _main() -> None:
        with chains.run_local():
            hello_chain = HelloAll()
            print(await hello_chain.run_remote(["Marius", "Sid", "Bola"]))

    asyncio.run(_main())
