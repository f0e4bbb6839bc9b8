"""Durable state of the service: stored chains, invocations, step records, the outbox, leases
and approvals, behind one async interface (`Store`), in memory or in SQLite/PostgreSQL."""

from chainlets.store.factory import open_store
from chainlets.store.memory import MemoryStore
from chainlets.store.models import (
    Approval,
    ApprovalState,
    Created,
    Event,
    EventClaim,
    EventState,
    Invocation,
    Lease,
    NewEvent,
    NewInvocation,
    OpenApproval,
    Page,
    PurgeCounts,
    RerunOf,
    State,
    StoredChain,
    StoredStep,
)
from chainlets.store.protocol import Store
from chainlets.store.rows import chain_id_for
from chainlets.store.settings import Limits, StoreSettings
from chainlets.store.sql import SqlStore

__all__ = [
    "Approval",
    "ApprovalState",
    "Created",
    "Event",
    "EventClaim",
    "EventState",
    "Invocation",
    "Lease",
    "Limits",
    "MemoryStore",
    "NewEvent",
    "NewInvocation",
    "OpenApproval",
    "Page",
    "PurgeCounts",
    "RerunOf",
    "SqlStore",
    "State",
    "Store",
    "StoreSettings",
    "StoredChain",
    "StoredStep",
    "chain_id_for",
    "open_store",
]

# Both implementations satisfy the interface (checked by mypy).
_memory: type[Store] = MemoryStore
_sql: type[Store] = SqlStore
