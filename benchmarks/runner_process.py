"""A worker-only runner process, for the crash tests and the durability benchmark: the
service's worker on a database, claiming every invocation no live lease holds and running it
with a generator that answers deterministically after a random pause. Each call is noted in a
log file before it is made (one unbuffered append, which survives SIGKILL):
`START <unix time> <step> <prompt>`. It prints `ready` once it polls.

python -m benchmarks.runner_process DATABASE_URL CALL_LOG LEASE_S LATENCY_S [POLL_S]
"""

import asyncio
import os
import random
import sys
import time
from datetime import datetime

from chainlets.engine.approval import ApprovalGate
from chainlets.engine.models import (
    Generation,
    GenerationRequest,
    InvocationResult,
    RunOptions,
    Usage,
)
from chainlets.engine.protocols import GeneratorProtocol
from chainlets.engine.scheduler import StepCommit, StepObserver, run_chain
from chainlets.language.compiler import CompiledChain, compile_chain
from chainlets.language.plugins import DEFAULT_PLUGINS
from chainlets.language.spec import ChainSpec, JsonValue
from chainlets.service.worker import Execute, Worker, WorkerSettings
from chainlets.store import StoreSettings, open_store

__all__ = ["LoggingGenerator", "answer", "executor"]


def answer(prompt: str) -> str:
    """The generator's reply to `prompt`: the same in every process and every attempt."""
    return f"[{prompt}]"


def executor(generator: GeneratorProtocol) -> Execute:
    """The service's `execute` (what a ChainRunner's does) with `generator` as the mock
    backend: for a worker or runtime built without a runner."""
    async def execute(chain: CompiledChain, inputs: dict[str, JsonValue],
                      options: RunOptions, *, observer: StepObserver, commit: StepCommit,
                      previous: InvocationResult | None,
                      approvals: ApprovalGate | None = None,
                      started_at: datetime | None = None) -> InvocationResult:
        return await run_chain(chain, inputs, {"mock": generator}, options, observer=observer,
                               commit=commit, previous=previous, approvals=approvals,
                               started_at=started_at)
    return execute


class LoggingGenerator:
    """Notes each call in the log, waits up to `latency_s`, answers `answer(prompt)`."""

    def __init__(self, log_fd: int, latency_s: float) -> None:
        self.log_fd, self.latency_s = log_fd, latency_s

    async def run_remote(self, request: GenerationRequest) -> Generation:
        prompt = request.messages[-1].content
        if self.log_fd >= 0:
            os.write(self.log_fd, f"START {time.time():.6f} {request.step} {prompt}\n".encode())
        if self.latency_s:
            await asyncio.sleep(random.uniform(self.latency_s / 5, self.latency_s))
        return Generation(text=answer(prompt), model="crash",
                          usage=Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2))


async def main(url: str, call_log: str, lease_s: float, latency_s: float,
               poll_s: float = 0.05) -> None:
    store = await open_store(StoreSettings(url=url, lease_s=lease_s))
    generator = LoggingGenerator(
        os.open(call_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if call_log != "-" else -1,
        latency_s)
    chains: dict[str, CompiledChain] = {}

    async def load_chain(chain_id: str) -> CompiledChain:
        if chain_id not in chains:
            stored = await store.get_chain(chain_id)
            chains[chain_id] = compile_chain(ChainSpec.model_validate(stored.chain),
                                             DEFAULT_PLUGINS)
        return chains[chain_id]

    worker = Worker(store, executor(generator), load_chain, settings=WorkerSettings(
        poll_s=poll_s, write_delay_s=0.01, heartbeat_s=lease_s / 3))
    worker.ensure_polling()
    print("ready", flush=True)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])))
