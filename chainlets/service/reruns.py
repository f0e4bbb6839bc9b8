"""Rerun from a step: which steps run again, which committed outputs are reused, and which
edits of the chain a rerun accepts."""

from chainlets.errors import RequestError
from chainlets.language.compiler import CompiledChain
from chainlets.language.messages import listing, suggest
from chainlets.store import Invocation, State

__all__ = ["downstream", "plan_reuse"]


def downstream(chain: CompiledChain, from_step: str) -> set[str]:
    """`from_step` and every step that depends on it, directly or not."""
    found, todo = {from_step}, [from_step]
    while todo:
        for child in chain.dependents.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def plan_reuse(source: Invocation, source_chain: CompiledChain, chain: CompiledChain,
               from_step: str) -> list[str]:
    """The steps of `chain` whose outputs the rerun copies from `source`: every step that
    succeeded there and is not `from_step` or downstream of it (the others run). A step
    whose output is reused must be unchanged in an edited `chain` (RequestError naming it)."""
    if from_step not in chain.steps:
        raise RequestError(f"from_step: `{from_step}` is not a step of chain `{chain.handle}`"
                           f"{suggest(from_step, chain.steps)}")
    rerun = downstream(chain, from_step)
    succeeded = {s.handle for s in source.steps if s.state is State.SUCCEEDED}
    reuse = [h for h in chain.steps if h not in rerun and h in succeeded]
    changed = [h for h in reuse if h not in source_chain.steps
               or source_chain.steps[h].spec != chain.steps[h].spec]
    if changed:
        raise RequestError(
            f"chain: step{'s' if len(changed) > 1 else ''} {listing(changed, limit=5)} "
            f"changed, but {'their outputs are' if len(changed) > 1 else 'its output is'} "
            f"reused from invocation `{source.invocation_id}` (only `{from_step}` and the "
            f"steps after it run again); rerun from `{changed[0]}` or an earlier step, or "
            "leave it as it was")
    return reuse
