"""How webhooks are delivered: attempt timeout, concurrency, and the retry schedule (pure
functions of the attempt count, the clock and a random draw)."""

import email.utils
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from chainlets.service.settings import env_number

__all__ = ["DeliveryPolicy", "parse_retry_after"]


class DeliveryPolicy(BaseModel):
    """How long an attempt may take, how many run at once, when to retry a failed one and when
    to stop; `from_env` reads each setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    first_retry_s: float = Field(
        default=1.0, gt=0, description="Delay before the first retry, and the least delay a "
                                       "`Retry-After` can ask for "
                                       "(CHAINRUNNER_WEBHOOK_FIRST_RETRY_S).")
    backoff_factor: float = Field(
        default=2.0, ge=1, description="Each further delay is this times the previous "
                                       "(CHAINRUNNER_WEBHOOK_BACKOFF_FACTOR).")
    max_delay_s: float = Field(
        default=3600.0, gt=0, description="Cap on one delay (CHAINRUNNER_WEBHOOK_MAX_DELAY_S).")
    jitter: float = Field(
        default=0.2, ge=0, le=1, description="Each delay is scaled by a random factor in "
                                             "[1 - jitter, 1 + jitter] "
                                             "(CHAINRUNNER_WEBHOOK_JITTER).")
    give_up_after_s: float = Field(
        default=86400.0, ge=0, description="No attempt is scheduled later than this after the "
                                           "event (CHAINRUNNER_WEBHOOK_GIVE_UP_AFTER_S).")
    attempt_timeout_s: float = Field(
        default=10.0, gt=0, description="One attempt's limit, connecting to the last header "
                                        "byte (CHAINRUNNER_WEBHOOK_TIMEOUT_S).")
    max_in_flight: int = Field(
        default=64, ge=1, description="Attempts in flight at once per sender; more wait, "
                                      "outside their timeout "
                                      "(CHAINRUNNER_WEBHOOK_MAX_IN_FLIGHT).")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "DeliveryPolicy":
        """The policy set in `environ`, defaults for the rest; ConfigurationError names a bad
        variable."""
        base = cls()
        return cls(
            first_retry_s=env_number(environ, "CHAINRUNNER_WEBHOOK_FIRST_RETRY_S",
                                     base.first_retry_s, minimum=0.001),
            backoff_factor=env_number(environ, "CHAINRUNNER_WEBHOOK_BACKOFF_FACTOR",
                                      base.backoff_factor, minimum=1),
            max_delay_s=env_number(environ, "CHAINRUNNER_WEBHOOK_MAX_DELAY_S",
                                   base.max_delay_s, minimum=0.001),
            jitter=env_number(environ, "CHAINRUNNER_WEBHOOK_JITTER", base.jitter,
                              minimum=0, maximum=1),
            give_up_after_s=env_number(environ, "CHAINRUNNER_WEBHOOK_GIVE_UP_AFTER_S",
                                       base.give_up_after_s, minimum=0),
            attempt_timeout_s=env_number(environ, "CHAINRUNNER_WEBHOOK_TIMEOUT_S",
                                         base.attempt_timeout_s, minimum=0.001),
            max_in_flight=int(env_number(environ, "CHAINRUNNER_WEBHOOK_MAX_IN_FLIGHT",
                                         base.max_in_flight, minimum=1, integer=True)))

    def delay_s(self, failures: int, draw: float) -> float:
        """Seconds to wait after `failures` failed attempts (≥ 1); `draw` is uniform in [0, 1)."""
        base = self.first_retry_s
        for _ in range(failures - 1):
            if base >= self.max_delay_s:
                break
            base *= self.backoff_factor
        return min(base, self.max_delay_s) * (1 + self.jitter * (2 * draw - 1))

    def next_attempt_at(self, *, failures: int, window_start: datetime, now: datetime,
                        draw: float, retry_after_s: float | None = None) -> datetime | None:
        """When to try again after `failures` failed attempts, or None to give up.

        A receiver's `Retry-After` sets the delay (at least `first_retry_s`); otherwise it is
        exponential with jitter. No attempt goes later than `give_up_after_s` after
        `window_start` (the event's time, or a redelivery's).
        """
        if retry_after_s is not None:
            delay = max(retry_after_s, self.first_retry_s)
        else:
            delay = self.delay_s(failures, draw)
        at = now + timedelta(seconds=delay)
        return None if at > window_start + timedelta(seconds=self.give_up_after_s) else at


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """A `Retry-After` header in seconds from `now`: delay-seconds or an HTTP date; None when
    absent or unreadable (the schedule then applies)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        at = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if at.tzinfo is None:  # RFC 9110 dates are GMT; a zoneless one is read as such
        at = at.replace(tzinfo=UTC)
    return max(0.0, (at - now).total_seconds())
