"""Consumers joining and leaving at random, a broker restart and a store outage: nothing lost or doubled.

Both tests run `stream.tools.chaos` (what `make chaos` runs for ten minutes) with a tiny multi-head
package and a tiny single-head one: a broker of its own, consumer processes of one group, each with
its own chdb store, and a check of the union of the stores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.tools.chaos import Chaos, Plan

pytestmark = pytest.mark.integration


def _assert_nothing_broken(chaos: Chaos) -> None:
    report = chaos.report
    text = "\n".join([*report.lines(), *report.lost_examples])
    assert report.drained, text
    assert report.lost == 0, text
    assert report.duplicated == 0, text
    assert report.unexpected_dead_letters == 0, text
    assert report.dead_lettered == report.bad > 0, text
    assert report.good > 0 and len(report.model_versions) == 2, text


def test_three_consumers_joining_and_leaving_lose_and_double_nothing(
    tiny_multihead: Path, tiny_packages: list[Path], tmp_path: Path
) -> None:
    # A multi-head package (3 scored rows, an entity set and an items row per item) and a single-head one.
    models = [tiny_multihead, tiny_packages[0]]
    plan = Plan(seconds=150, consumers=3, partitions=6, items=20_000, models=models, broker_restarts=0,
                outage_s=0, kill_every_s=(2.0, 6.0), seed=1, batch_size=500)
    chaos = Chaos(plan, tmp_path, progress=False)
    chaos.run()
    assert chaos.report.kills + chaos.report.terms >= 5
    assert chaos.report.starts >= 3 + 5
    _assert_nothing_broken(chaos)


def test_two_minute_chaos_with_broker_restart_and_store_outage(
    tiny_multihead: Path, tiny_packages: list[Path], tmp_path: Path
) -> None:
    plan = Plan(seconds=120, consumers=3, partitions=6, items=6_000, models=[tiny_multihead, tiny_packages[0]],
                broker_restarts=1, outage_s=12, kill_every_s=(3.0, 8.0), seed=2)
    chaos = Chaos(plan, tmp_path, progress=False)
    chaos.run()
    assert chaos.report.broker_restarts == 1 and chaos.report.outages == 1
    _assert_nothing_broken(chaos)
