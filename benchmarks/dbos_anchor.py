"""The DBOS Transact anchor: the service benchmark's 3-step chain as a DBOS workflow, each step a
durable `@DBOS.step` answering at once, `--invocations` run `--concurrency` at a time on the
system database at `--url` (SQLite file or PostgreSQL). Prints one JSON line `{"rate": …}`.

Runs only in the benchmark's own environment (`.chainrunner/bench-dbos`, where `dbos` is
installed; see benchmarks/service_anchor.py), never in the project's.
"""

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from dbos import DBOS

F = TypeVar("F", bound=Callable[..., Any])


def _define() -> Callable[[str], Any]:
    step: Callable[[F], F] = DBOS.step()
    workflow: Callable[[F], F] = DBOS.workflow()

    @step
    async def a(text: str) -> str:
        return f"[mock] {text}"

    @step
    async def b(text: str) -> str:
        return f"[mock] {text}"

    @step
    async def c(text: str) -> str:
        return f"[mock] {text}"

    @workflow
    async def chain(text: str) -> str:
        return await c(await b(await a(text)))

    return chain


async def _measure(chain: Callable[[str], Any], invocations: int, concurrency: int) -> float:
    slots = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with slots:
            handle = await DBOS.start_workflow_async(chain, f"x{n}")
            await handle.get_result()

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(invocations)))
    return invocations / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--invocations", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    DBOS(config={"name": "chainrunner-anchor", "system_database_url": args.url,
                 "log_level": "ERROR"})
    chain = _define()
    DBOS.launch()
    try:
        rate = asyncio.run(_measure(chain, args.invocations, args.concurrency))
    finally:
        DBOS.destroy()
    print(json.dumps({"rate": rate}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
