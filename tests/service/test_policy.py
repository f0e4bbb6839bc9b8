"""The delivery policy: a retry schedule exponential with jitter, capped and bounded, with
Retry-After first; every setting from the environment."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chainlets.errors import ConfigurationError
from chainlets.service.policy import DeliveryPolicy, parse_retry_after

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
POLICY = DeliveryPolicy()
MIDDLE = 0.5  # a draw of 0.5 means no jitter


def test_first_retry_is_about_a_second_then_doubles_to_an_hour() -> None:
    delays = [POLICY.delay_s(failures, MIDDLE) for failures in range(1, 16)]
    assert delays[:5] == [1, 2, 4, 8, 16]
    assert delays[11] == 2048 and delays[12:] == [3600, 3600, 3600]


def test_jitter_spreads_each_delay_by_at_most_the_set_fraction() -> None:
    assert POLICY.delay_s(1, 0.0) == pytest.approx(0.8)
    assert POLICY.delay_s(1, 0.999999) == pytest.approx(1.2, rel=1e-5)
    assert POLICY.delay_s(3, 0.25) == pytest.approx(4 * 0.9)
    assert DeliveryPolicy(jitter=0).delay_s(3, 0.0) == 4


@given(failures=st.integers(1, 10_000), draw=st.floats(0, 1, exclude_max=True))
def test_no_delay_exceeds_the_cap_or_falls_below_the_jittered_first(failures: int,
                                                                   draw: float) -> None:
    delay = POLICY.delay_s(failures, draw)
    assert 0.8 <= delay <= 3600 * 1.2
    assert delay <= POLICY.delay_s(failures + 1, 0.999) or delay > 3600 * 0.8


def test_the_schedule_spans_the_give_up_period_then_stops() -> None:
    """Retry at the scheduled times until the next would fall past 24 h after the event."""
    now, failures, times = T0, 0, []
    while True:
        failures += 1
        at = POLICY.next_attempt_at(failures=failures, window_start=T0, now=now, draw=MIDDLE)
        if at is None:
            break
        times.append(at)
        now = at
    assert times[0] == T0 + timedelta(seconds=1)
    assert times[-1] <= T0 + timedelta(hours=24) < times[-1] + timedelta(hours=1)
    assert len(times) == 12 + 22  # 1 s … 2048 s (68 min in all), then hourly: 22 fit in 24 h


def test_retry_after_sets_the_next_delay() -> None:
    at = POLICY.next_attempt_at(failures=1, window_start=T0, now=T0, draw=MIDDLE,
                                retry_after_s=120)
    assert at == T0 + timedelta(seconds=120)


def test_retry_after_below_the_first_delay_is_raised_to_it() -> None:
    at = POLICY.next_attempt_at(failures=5, window_start=T0, now=T0, draw=MIDDLE,
                                retry_after_s=0)
    assert at == T0 + timedelta(seconds=1)


def test_retry_after_past_the_period_gives_up() -> None:
    assert POLICY.next_attempt_at(failures=1, window_start=T0, now=T0, draw=MIDDLE,
                                  retry_after_s=25 * 3600) is None


def test_a_redelivery_gets_a_fresh_period() -> None:
    late = T0 + timedelta(days=3)
    assert POLICY.next_attempt_at(failures=1, window_start=T0, now=late, draw=MIDDLE) is None
    assert POLICY.next_attempt_at(failures=1, window_start=late, now=late, draw=MIDDLE) \
        == late + timedelta(seconds=1)


@pytest.mark.parametrize(("header", "seconds"), [
    ("120", 120.0),
    (" 7 ", 7.0),
    ("Tue, 01 Dec 2026 09:02:30 GMT", 150.0),
    ("Tue, 01 Dec 2026 08:00:00 GMT", 0.0),
    ("Tue, 01 Dec 2026 09:00:10 -0000", 10.0),
    ("soon", None),
    ("-5", None),
    (None, None),
], ids=["seconds", "padded", "date", "past-date", "zoneless-date", "junk", "negative", "absent"])
def test_retry_after_is_read_as_seconds_or_an_http_date(header: str | None,
                                                        seconds: float | None) -> None:
    assert parse_retry_after(header, T0) == seconds


def test_every_setting_comes_from_the_environment() -> None:
    policy = DeliveryPolicy.from_env({
        "CHAINRUNNER_WEBHOOK_FIRST_RETRY_S": "0.5", "CHAINRUNNER_WEBHOOK_BACKOFF_FACTOR": "3",
        "CHAINRUNNER_WEBHOOK_MAX_DELAY_S": "60", "CHAINRUNNER_WEBHOOK_JITTER": "0",
        "CHAINRUNNER_WEBHOOK_GIVE_UP_AFTER_S": "600", "CHAINRUNNER_WEBHOOK_TIMEOUT_S": "2.5",
        "CHAINRUNNER_WEBHOOK_MAX_IN_FLIGHT": "8"})
    assert policy == DeliveryPolicy(first_retry_s=0.5, backoff_factor=3, max_delay_s=60,
                                    jitter=0, give_up_after_s=600, attempt_timeout_s=2.5,
                                    max_in_flight=8)
    assert [policy.delay_s(n, 0.1) for n in (1, 2, 3, 4, 5)] == [0.5, 1.5, 4.5, 13.5, 40.5]
    assert DeliveryPolicy.from_env({}) == DeliveryPolicy()


@pytest.mark.parametrize(("name", "value", "bounds"), [
    ("CHAINRUNNER_WEBHOOK_JITTER", "2", "from 0 to 1"),
    ("CHAINRUNNER_WEBHOOK_BACKOFF_FACTOR", "0.5", "≥ 1"),
    ("CHAINRUNNER_WEBHOOK_TIMEOUT_S", "inf", "≥ 0.001"),
    ("CHAINRUNNER_WEBHOOK_GIVE_UP_AFTER_S", "a day", "≥ 0"),
    ("CHAINRUNNER_WEBHOOK_MAX_IN_FLIGHT", "2.5", "≥ 1"),
], ids=["jitter", "factor", "timeout", "period", "in-flight"])
def test_a_bad_setting_is_named_with_its_bounds(name: str, value: str, bounds: str) -> None:
    with pytest.raises(ConfigurationError,
                       match=rf"^{name}='{value}' is not a (whole )?number {bounds}: set it"):
        DeliveryPolicy.from_env({name: value})
