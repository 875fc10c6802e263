"""The replay's per-partition account (what it scanned, kept and skipped) and its flags, without a broker."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from stream.consumer.cli import replay_command
from stream.kafka.replay import PartitionPlan, ReplayReport, _duration

FROM, TO = 1_000, 2_000
stamps = st.lists(st.integers(min_value=-1, max_value=4_000), max_size=200)


def plan(start: int = 0, end: int = 100) -> PartitionPlan:
    return PartitionPlan("news", 0, start=start, stop=end, end=end, earliest=0)


@given(stamps)
def test_observe_counts_and_disorder_match_a_direct_count(timestamps: list[int]) -> None:
    p = plan()
    kept = [ts for ts in timestamps if p.observe(ts, FROM, TO)]
    stamped = [ts for ts in timestamps if ts >= 0]
    assert kept == [ts for ts in timestamps if ts < 0 or FROM <= ts <= TO]
    assert p.in_range == len(kept) and p.outside == len(timestamps) - len(kept)
    assert p.disorder_ms == max((max(stamped[: i + 1]) - ts for i, ts in enumerate(stamped)), default=0)
    inside = [ts for ts in stamped if FROM <= ts <= TO]
    assert (p.first_ts_ms, p.last_ts_ms) == ((min(inside), max(inside)) if inside else (None, None))


@given(st.lists(st.integers(min_value=0, max_value=4_000), max_size=200), st.integers(min_value=0, max_value=3_000))
def test_a_bounded_scan_is_complete_when_disorder_is_within_the_grace(timestamps: list[int], grace: int) -> None:
    """The bounded mode's promise: from the first offset stamped at or after from - grace to the first
    message stamped after to + grace, every message of the range is found if timestamps are at most
    grace out of order."""
    start = next((i for i, ts in enumerate(timestamps) if ts >= FROM - grace), len(timestamps))
    p = plan(start, len(timestamps))
    for ts in timestamps[start:]:
        if ts > TO + grace:
            break
        p.observe(ts, FROM, TO)
    disorder = max((max(timestamps[: i + 1]) - ts for i, ts in enumerate(timestamps)), default=0)
    wanted = sum(FROM <= ts <= TO for ts in timestamps)
    if disorder <= grace:
        assert p.in_range == wanted
    assert p.in_range <= wanted


def test_the_summary_accounts_for_a_bounded_scan_that_stopped_early() -> None:
    report = ReplayReport(FROM, TO, grace_ms=3_600_000, to_end=False, plans=[plan(10, 500)])
    p = report.plans[0]
    for ts in (1_500, 500, 1_600):
        p.observe(ts, FROM, TO)
    p.stop = p.scanned_to = 13  # the message at 13 was stamped after --to + grace
    lines = report.summary()
    assert lines[0].startswith("scan bounded by --grace 1h")
    assert "news[0]: offsets 10..13 scanned (3), 2 in range, 1 outside" in lines
    assert any(line.startswith("news[0]: offsets 13..500 not scanned (487), past the first message") for line in lines)
    assert "in range 2, outside 1, offsets scanned 3" in lines
    assert report.warnings() == []  # out of order by 1s only: within the grace

    tight = ReplayReport(FROM, TO, grace_ms=None, to_end=False, plans=[p])
    assert tight.mode().startswith("scan bounded by --grace 0s")
    (warning,) = tight.warnings()
    assert "out of order by up to 1s, more than --grace 0s" in warning and "after offset 13" in warning


def test_the_summary_of_an_interrupted_full_scan_says_so() -> None:
    p = plan(0, 40)
    p.scanned_to = 25
    report = ReplayReport(FROM, TO, grace_ms=None, to_end=True, plans=[p])
    assert (
        report.mode() == "scan to end: from each partition's beginning to each partition's end offset as of "
        "the start of the replay"
    )
    assert any("offsets 25..40 not scanned (15), the replay stopped before them" in line for line in report.summary())
    assert "no messages in the range" in report.summary()
    assert ReplayReport(FROM, TO, grace_ms=7_200_000, to_end=True).mode().startswith("scan to end: from --from - 2h")


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (999, "999ms"),
        (1_001, "2s"),
        (61_000, "2m"),
        (3_600_000, "1h"),
        (90_061_000, "26h"),
        (86_400_000, "1d"),
    ],
)
def test_durations_are_rounded_up_for_people(ms: int, text: str) -> None:
    assert _duration(ms) == text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scan-to-end", "--scan", "bounded"], "contradicts"),
        (["--scan", "sometimes"], "Invalid value for '--scan'"),
        (["--grace", "-1h"], "not a duration"),
        (["--grace", "soon"], "not a duration"),
        (["--to", "2026-11-17"], "--to is before --from"),
    ],
)
def test_contradictory_or_malformed_flags_are_usage_errors(args: list[str], message: str) -> None:
    base = ["--topic", "news", "--from", "2026-11-18", "--to", "2026-11-19", "--models", "pkg"]
    result = CliRunner().invoke(replay_command, [*base, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
