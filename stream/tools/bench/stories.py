"""The consumer with stories on and off: the e2e case (Kafka -> scoring -> chdb) drained alone, then
with the stories job running beside it, then alone again, in one worker process.

"On" means the job (`StoriesJob.run`, cycling every EVERY_S seconds, one embedding thread) runs in
a thread of the consumer's process on the same chdb store, assigning the items as the consumer
writes them: the two share the cores, the store and the interpreter, a harder setting than a job
in its own process or on its own host.  `stories_on_vs_off` is the consumer's items/s with the job
on over its items/s alone (the mean of the runs before and after); 1.0 means stories cost the
consumer nothing.  `stories_on_vs_off_per_cpu_s` is the same per CPU-second of the process (the
job's CPU counted in the "on" run): the figure a CPU-bound consumer sharing its cores would see.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from statistics import mean
from typing import Any

from stream.tools.bench.cases import Case

EVERY_S = 1.0


def run_stories(spec: dict[str, Any], case: Case, texts: list[str]) -> dict[str, Any]:
    from stream.core.settings import StoreSettings
    from stream.core.store import Store
    from stream.stories.cluster import STORY_THRESHOLDS, StoryConfig
    from stream.stories.embed import load_embedder
    from stream.stories.job import CycleResult, StoriesJob
    from stream.stories.queries import pending
    from stream.tools.bench.e2e import run_e2e

    off = [run_e2e(spec, case, texts)]
    with Store(StoreSettings(dsn=f"chdb://{spec['e2e']['store_dir']}", database="bench")) as store:
        job = StoriesJob(store, load_embedder("use", threads=1), StoryConfig(threshold=STORY_THRESHOLDS["use"]),
                         chunk=64)
        job.cycle()  # the first run's items, untimed: the job then follows the second as it is written
        stop, totals = threading.Event(), CycleResult()

        def follow() -> None:
            result = job.run(EVERY_S, stop)
            for name in ("items", "seconds", "embed_seconds"):
                setattr(totals, name, getattr(result, name))

        thread = threading.Thread(target=follow, name="stories-job", daemon=True)
        thread.start()
        try:
            on = run_e2e(spec, case, texts)
        finally:
            stop.set()
            thread.join()
        left = len(pending(store, None))
    if not spec.get("quick"):
        off.append(run_e2e(spec, case, texts))
    alone = mean(r["items_per_s"] for r in off)
    # Per CPU-second of the process (the job thread's included when on): what stories cost where
    # the consumer is CPU bound, whatever the neighbours of a shared host do to wall-clock figures.
    per_cpu = [r["items"] / r["cpu_seconds"] for r in (*off, on) if r.get("cpu_seconds")]
    return on | {
        "stories_off_items_per_s": [round(r["items_per_s"], 2) for r in off],
        "stories_on_vs_off": round(on["items_per_s"] / alone, 3) if alone else None,
        "stories_on_vs_off_per_cpu_s": round(per_cpu[-1] / mean(per_cpu[:-1]), 3) if len(per_cpu) > 1 else None,
        "stories_job": {"items": totals.items, "busy_s": round(totals.seconds, 3),
                        "items_per_s": round(totals.items_per_s, 1),
                        "embed_items_per_s": round(totals.items / totals.embed_seconds, 1)
                        if totals.embed_seconds else None,
                        "every_s": EVERY_S, "unassigned_after": left},
    }


def stories_ratio(cases: Sequence[Case], results: dict[str, dict[str, Any]],
                  key: str = "stories_on_vs_off") -> float | None:
    found = next((results.get(c.name) for c in cases if c.engine == "stories"), None)
    return found.get(key) if found and "error" not in found else None
