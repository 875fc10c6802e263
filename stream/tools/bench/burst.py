"""`yuqing bench --only burst`: the peak memory of `yuqing run` under a burst of huge items.

A fresh topic is filled with `items` news items of about `item_bytes` each (just under the
default `kafka.max_message_bytes`, mixed English and Chinese text), then a real `yuqing run`
process drains it into a fresh chdb store with the given model packages and its default batch
settings.  Its peak resident set comes from the kernel's accounting of the finished child
(`wait4`'s `ru_maxrss`), so nothing samples and nothing is missed.  The store is then checked:
every item scored once per package and flagged `truncated`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stream.core.settings import KafkaSettings, StoreSettings
from stream.core.store import Store
from stream.kafka.admin import ensure_topic
from stream.kafka.clients import producer

SENTENCES = (
    "Floodwater rose overnight along the river as crews reinforced the levees. ",
    "河水持续上涨，抢险队伍连夜加固堤坝，沿岸居民有序转移。",
)


def burst_item(i: int, item_bytes: int) -> bytes:
    """One news item of about `item_bytes` UTF-8 bytes."""
    head = {"id": f"burst-{i:05d}", "source": "burst", "title": f"Burst item {i}", "text": ""}
    room = item_bytes - len(json.dumps(head).encode())
    unit = "".join(SENTENCES)
    text = unit * (room // len(unit.encode()))
    return json.dumps({**head, "text": text}, ensure_ascii=False).encode()


def bench_burst(
    bootstrap: str,
    packages: Sequence[Path],
    *,
    items: int = 2000,
    item_bytes: int = 990_000,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    say = progress or (lambda _line: None)
    settings = KafkaSettings(bootstrap_servers=[bootstrap])
    topic, group = f"bench-burst-{uuid.uuid4().hex[:8]}", f"bench-burst-{uuid.uuid4().hex[:8]}"
    ensure_topic(settings, topic, partitions=4)
    out = producer(settings, max_request_size=2 * item_bytes)
    started = time.perf_counter()
    for i in range(items):
        out.send(topic, value=burst_item(i, item_bytes), key=str(i).encode())
        if i % 100 == 99:
            out.flush()
            say(f"produced {i + 1}/{items}")
    out.flush()
    out.close()
    produce_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="yuqing-burst-") as tmp:
        dsn = f"chdb://{Path(tmp) / 'store'}"
        args = [sys.executable, "-m", "stream.cli", "run", "--bootstrap", bootstrap, "--topic", topic,
                "--group", group, "--store", dsn, "--device", "cpu", "--until-idle", "10",
                "--models", *map(str, packages)]
        say(f"draining with: yuqing {' '.join(args[3:])}")
        started = time.perf_counter()
        with (Path(tmp) / "run.log").open("wb") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        run_s = time.perf_counter() - started
        if proc.returncode != 0:
            tail = (Path(tmp) / "run.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"yuqing run exited {proc.returncode}: {tail}")
        with Store(StoreSettings(dsn=dsn)) as store:
            per_version = store.rows(
                "SELECT model_version, count(), countIf(truncated) FROM yuqing.scored FINAL GROUP BY 1 ORDER BY 1"
            )
            stored_bytes = int(store.scalar(
                "SELECT sum(data_compressed_bytes) FROM system.parts WHERE database = 'yuqing' AND active"
            ) or 0)
    peak_mb = usage.ru_maxrss / 1024  # kilobytes on Linux
    rows = {str(v): {"rows": int(n), "truncated": int(t)} for v, n, t in per_version}
    complete = len(rows) == len(packages) and all(r["rows"] == items == r["truncated"] for r in rows.values())
    report: dict[str, Any] = {
        "items": items,
        "item_bytes": item_bytes,
        "burst_mb": round(items * item_bytes / 1e6, 1),
        "produce_s": round(produce_s, 1),
        "run_s": round(run_s, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "rows": rows,
        "store_compressed_mb": round(stored_bytes / 1e6, 1),
        "complete": complete,
    }
    report["table"] = "\n".join([
        f"burst: {items} items x {item_bytes:,} bytes ({report['burst_mb']} MB) on a fresh topic",
        f"yuqing run drained it in {report['run_s']} s; peak RSS {report['peak_rss_mb']} MB",
        *(f"  {v}: {r['rows']} rows, {r['truncated']} truncated" for v, r in rows.items()),
        f"store: {report['store_compressed_mb']} MB compressed; every item scored once per package: "
        f"{'yes' if report['complete'] else 'NO'}",
    ])
    return report
