"""Why the store refuses something: the errors both implementations raise, worded once."""

from chainlets.errors import ConflictError, LeaseLostError, NotFoundError
from chainlets.store.models import EventClaim, Lease

__all__ = ["chain_not_found", "event_claim_lost", "invocation_not_found", "lease_lost",
           "step_not_found", "token_not_found", "token_reused"]


def chain_not_found(chain_id: str) -> NotFoundError:
    return NotFoundError(f"chain `{chain_id}` not found; list stored chains with `list_chains`")


def invocation_not_found(invocation_id: str) -> NotFoundError:
    return NotFoundError(f"invocation `{invocation_id}` not found (never created, or purged "
                         "after the retention period)")


def step_not_found(invocation_id: str, handle: str) -> NotFoundError:
    return NotFoundError(f"invocation `{invocation_id}` has no step `{handle}`")


def token_not_found() -> NotFoundError:
    return NotFoundError("task_token: no step waits on this token (never issued, or its "
                         "invocation was purged)")


def token_reused(handle: str) -> ConflictError:
    return ConflictError(f"step `{handle}`: this task token hash is already in use; "
                         "issue a fresh random token")


def lease_lost(lease: Lease) -> LeaseLostError:
    return LeaseLostError(
        f"invocation `{lease.invocation_id}`: the lease of `{lease.owner}` (attempt "
        f"{lease.attempt}) is lost: another worker claimed it or it was cancelled; "
        "stop working on it")


def event_claim_lost(claim: EventClaim) -> LeaseLostError:
    return LeaseLostError(f"event `{claim.event.event_id}`: the delivery claim of "
                          f"`{claim.owner}` (attempt {claim.attempt}) is lost; another worker "
                          "claimed it or it was redelivered")
