"""`yuqing chaos`: a bounded soak that tries to make the consumer lose or double something.

It starts a broker of its own (deploy/local/kafka.sh on free ports, its own data directory, so
no other user of the local broker is disturbed), produces a mixed stream (news items, valid edge
cases, poison) to a topic while consumer processes of one group join and leave (SIGKILL and
SIGTERM at random moments), restarts the broker once, makes every consumer's store refuse writes
for a while once, then lets the group drain and checks what a reader sees:

* lost: a produced message that ended neither as its rows (a `scored` row per model version and
  head, an `entities` row per version with an entity head, an `items` row) nor as a dead letter
  in any consumer's store; also a `scored` row whose store has no `items` row for it;
* duplicated: a row a reader would count twice in one store (`scored`, `items`, `entities` or
  `dead_letters` under FINAL holding the same key more than once);
* dead-lettered: the poison messages, each expected to end as a dead letter.

A chdb path opens in one process at a time, so every consumer slot has its own store; a
restarted consumer reuses its slot's store, and the check reads the union of the stores.

The store outage is a real ClickHouse refusal: each consumer process runs under a small wrapper
(`python -m stream.tools.chaos OUTAGE_FILE run ...`) whose watcher thread detaches the `scored`
table while OUTAGE_FILE exists and attaches it again when it is gone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from stream.core.errors import ConfigError, YuqingError
from stream.core.settings import KafkaSettings, StoreSettings
from stream.core.store import Store

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "deploy" / "local" / "kafka.sh"
DATABASE = "yuqing"
MAX_MESSAGE_BYTES = 65_536  # the consumers' limit: larger messages are poison of kind too_large


# -- the stream ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One message to produce, and what it must become: rows for `id`, or a dead letter."""

    value: bytes
    id: str | None  # None: poison, must end as a dead letter
    kind: str  # "item", "edge:<what>" or "poison:<what>"


def _item(i: int, rng: random.Random) -> dict[str, Any]:
    subjects = ["央行宣布降准", "factory fire injures workers", "新能源汽车销量创新高", "storm disrupts flights",
                "教育部发布新规", "tech shares slide", "暴雨致多地停课", "central bank holds rates"]
    return {
        "id": f"chaos-{i:07d}",
        "source": f"wire{i % 5}",
        "url": f"https://news.example/chaos/{i}",
        "title": f"{subjects[i % len(subjects)]} {i}",
        "text": " ".join(rng.choice(subjects) for _ in range(1 + i % 6)),
        "published_at": f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:00:00+08:00",
    }


def _edge(i: int, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """Valid items at the edges of the contract: each must be scored."""
    item = _item(i, rng)
    what = ["no_date", "title_only", "text_only", "emoji", "long_text", "int_id", "lang_given", "unknown_fields"][
        i % 8
    ]
    if what == "no_date":
        del item["published_at"]
    elif what == "title_only":
        del item["text"]
    elif what == "text_only":
        item["title"] = ""
    elif what == "emoji":
        item["title"] = "🚨🔥 " + item["title"] + " ﷽ \u200b\u2028"
    elif what == "long_text":
        item["text"] = "长文本" * 5_000  # 15k characters, 45 KB: long, and still under the byte limit
    elif what == "int_id":
        item["id"] = 10**12 + i
    elif what == "lang_given":
        item["lang"] = "zh"
    else:
        item["extra"] = {"nested": [1, 2, {"x": None}]}
    return what, item


def _poison(i: int, rng: random.Random) -> tuple[str, bytes]:
    """Messages that must end as dead letters, one of each kind in turn."""
    kinds = ["invalid_utf8", "invalid_json", "not_object", "bad_field", "no_text", "too_large", "bad_date",
             "deep_nesting", "huge_number"]
    what = kinds[i % len(kinds)]
    good = json.dumps(_item(i, rng)).encode()
    if what == "invalid_utf8":
        return what, good[:20] + b"\xff\xfe\xc3" + good[20:]
    if what == "invalid_json":
        return what, good[:-3]
    if what == "not_object":
        return what, json.dumps([_item(i, rng)]).encode()
    if what == "bad_field":
        return what, json.dumps({**_item(i, rng), "title": {"zh": "标题"}}).encode()
    if what == "no_text":
        return what, json.dumps({**_item(i, rng), "title": "", "text": "  "}).encode()
    if what == "too_large":
        return what, json.dumps({**_item(i, rng), "text": "x" * (MAX_MESSAGE_BYTES + 10)}).encode()
    if what == "bad_date":
        return what, json.dumps({**_item(i, rng), "published_at": "yesterday at noon"}).encode()
    if what == "deep_nesting":
        return what, b'{"title": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return what, b'{"title": ' + b"9" * 5000 + b', "text": "a number longer than any parser allows"}'


def messages(count: int, seed: int, edge_share: float = 0.05, poison_share: float = 0.05) -> Iterator[Message]:
    rng = random.Random(seed)
    for i in range(count):
        roll = rng.random()
        if roll < poison_share:
            what, value = _poison(i, rng)
            yield Message(value, None, f"poison:{what}")
        elif roll < poison_share + edge_share:
            what, item = _edge(i, rng)
            yield Message(json.dumps(item, ensure_ascii=False).encode(), str(item["id"]), f"edge:{what}")
        else:
            item = _item(i, rng)
            yield Message(json.dumps(item, ensure_ascii=False).encode(), str(item["id"]), "item")


# -- the broker and the consumers ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Broker:
    """A broker of the chaos run's own, started and stopped with deploy/local/kafka.sh."""

    def __init__(self, home: Path) -> None:
        if not KAFKA_SH.exists():
            raise ConfigError(f"{KAFKA_SH} not found", hint="run `yuqing chaos` from a checkout of the project")
        self.port = _free_port()
        self.env = {
            **os.environ,
            "YUQING_KAFKA_HOME": str(home),
            "YUQING_KAFKA_PORT": str(self.port),
            "YUQING_KAFKA_CONTROLLER_PORT": str(_free_port()),
            "YUQING_KAFKA_LIB": str(REPO / ".cache" / "kafka" / "lib"),
        }
        self.bootstrap = f"127.0.0.1:{self.port}"

    def _sh(self, verb: str) -> None:
        done = subprocess.run(["bash", str(KAFKA_SH), verb], env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise YuqingError(f"kafka.sh {verb} failed: {done.stderr.strip()[-500:]}")

    def up(self) -> None:
        self._sh("up")

    def down(self) -> None:
        self._sh("down")


@dataclass
class Slot:
    """One consumer position: its own store; a process that is killed and restarted."""

    index: int
    store: Path
    logs: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def last_assignment(self) -> str:
        """The latest consumer's last assignment line, and its last line, from its log."""
        log = self.logs / f"consumer-{self.index}-{self.starts}.log"
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []
        assigned = next((line for line in reversed(lines) if " assigned " in line), "no assignment")
        state = "running" if self.alive else f"exited {self.proc.returncode if self.proc else None}"
        return f"slot {self.index}, start {self.starts} ({state}): {assigned}; last: {lines[-1] if lines else '-'}"


@dataclass
class Plan:
    seconds: float = 600.0
    consumers: int = 3
    partitions: int = 6
    items: int = 30_000
    models: list[Path] = field(default_factory=list)
    broker_restarts: int = 1
    outage_s: float = 30.0
    kill_every_s: tuple[float, float] = (3.0, 10.0)
    seed: int = 0
    batch_size: int = 200


@dataclass
class Report:
    produced: int = 0
    good: int = 0
    bad: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    terms: int = 0
    starts: int = 0
    broker_restarts: int = 0
    outages: int = 0
    model_versions: list[str] = field(default_factory=list)
    lost: int = 0
    lost_examples: list[str] = field(default_factory=list)
    duplicated: int = 0
    dead_lettered: int = 0
    unexpected_dead_letters: int = 0
    drained: bool = False
    seconds: float = 0.0
    at_deadline: list[str] = field(default_factory=list)  # an undrained run: each partition's lag, each slot's

    def lines(self) -> list[str]:
        poison = {k.split(":", 1)[1]: v for k, v in sorted(self.kinds.items()) if k.startswith("poison:")}
        return [
            f"items produced    {self.produced} ({self.good} to score, {self.bad} bad)",
            f"consumer starts   {self.starts}; kills {self.kills} SIGKILL + {self.terms} SIGTERM",
            f"broker restarts   {self.broker_restarts}",
            f"store outages     {self.outages}",
            f"poison kinds      {', '.join(f'{k}={v}' for k, v in poison.items())}",
            f"model versions    {', '.join(self.model_versions)}",
            f"drained           {'yes' if self.drained else 'NO (deadline)'} after {self.seconds:.0f} s",
            f"lost = {self.lost}",
            f"duplicated = {self.duplicated}",
            f"dead-lettered = {self.dead_lettered} (bad messages: {self.bad}; "
            f"items dead-lettered instead of scored: {self.unexpected_dead_letters})",
            *self.at_deadline,
        ]

    @property
    def ok(self) -> bool:
        return self.drained and self.lost == 0 and self.duplicated == 0 and self.dead_lettered == self.bad


class Chaos:
    def __init__(self, plan: Plan, workdir: Path, *, progress: bool = True) -> None:
        if not plan.models:
            raise ConfigError("no model packages given", hint="pass --models PKG (see `yuqing export`)")
        self.plan, self.workdir, self.progress = plan, workdir, progress
        self.rng = random.Random(plan.seed)
        self.topic = f"chaos-{plan.seed}-{int(time.time())}"
        self.group = f"{self.topic}-group"
        self.outage_file = workdir / "store-outage"
        self.broker = Broker(workdir / "kafka")
        self.slots = [
            Slot(i, workdir / f"store-{i}", workdir / "logs") for i in range(plan.consumers)
        ]
        self.report = Report()
        self.expected: dict[tuple[int, int], Message] = {}  # (partition, offset) -> message
        self.producing = threading.Event()  # set: the producer may send
        self.produced_all = threading.Event()
        self._producer_error: BaseException | None = None

    # -- parts of the run -----------------------------------------------------------------
    def _produce(self) -> None:
        from stream.kafka.clients import producer

        settings = KafkaSettings(bootstrap_servers=[self.broker.bootstrap])
        out = producer(settings, enable_idempotence=True, max_request_size=4 * MAX_MESSAGE_BYTES + 1_000_000,
                       retries=10)
        chunk: list[tuple[Message, Any]] = []
        spread_s = self.plan.seconds * 0.5  # produce during the first half, kills and all
        pause = spread_s / max(1, self.plan.items / 500)
        try:
            for n, message in enumerate(messages(self.plan.items, self.plan.seed), start=1):
                self.producing.wait()
                chunk.append((message, out.send(self.topic, value=message.value, key=str(n).encode())))
                if len(chunk) >= 500:
                    self._settle(out, chunk)
                    time.sleep(pause)
            self._settle(out, chunk)
        except BaseException as exc:  # reported by the main thread
            self._producer_error = exc
        finally:
            out.close()
            self.produced_all.set()

    def _settle(self, out: Any, chunk: list[tuple[Message, Any]]) -> None:
        out.flush()
        for message, future in chunk:
            meta = future.get(timeout=60)
            self.expected[(meta.partition, meta.offset)] = message
            r = self.report
            r.produced += 1
            r.kinds[message.kind] = r.kinds.get(message.kind, 0) + 1
            if message.id is None:
                r.bad += 1
            else:
                r.good += 1
        chunk.clear()

    def _start(self, slot: Slot) -> None:
        slot.logs.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable, "-m", "stream.tools.chaos", str(self.outage_file),
            "run", "--bootstrap", self.broker.bootstrap, "--topic", self.topic, "--group", self.group,
            "--store", f"chdb://{slot.store}", "--device", "cpu", "--batch-size", str(self.plan.batch_size),
            "--max-wait-ms", "300", "--max-message-bytes", str(MAX_MESSAGE_BYTES),
            "--models", *map(str, self.plan.models),
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
               "YUQING_KAFKA__SESSION_TIMEOUT_MS": "6000", "YUQING_STORE__DATABASE": DATABASE}
        slot.starts += 1
        self.report.starts += 1
        # A file, not a pipe: a pipe nobody reads fills up and blocks the consumer.
        with (slot.logs / f"consumer-{slot.index}-{slot.starts}.log").open("wb") as out:
            slot.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)

    def _stop(self, slot: Slot, sig: signal.Signals, wait_s: float = 60.0) -> None:
        if slot.proc is None or slot.proc.poll() is not None:
            return
        slot.proc.send_signal(sig)
        try:
            slot.proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            slot.proc.kill()
            slot.proc.wait()

    def _kill_someone(self) -> None:
        live = [s for s in self.slots if s.alive]
        if not live:
            return
        slot = self.rng.choice(live)
        if self.rng.random() < 0.6:
            self.report.kills += 1
            self._stop(slot, signal.SIGKILL)
        else:
            self.report.terms += 1
            self._stop(slot, signal.SIGTERM)

    def _restart_broker(self) -> None:
        self.producing.clear()
        time.sleep(1.0)  # let an in-flight chunk settle before the broker goes
        self.broker.down()
        time.sleep(3.0)
        self.broker.up()
        self.report.broker_restarts += 1
        self.producing.set()

    @contextmanager
    def _outage(self) -> Iterator[None]:
        self.outage_file.touch()
        self.report.outages += 1
        try:
            yield
        finally:
            self.outage_file.unlink(missing_ok=True)

    def _lag(self) -> int | None:
        from stream.kafka.admin import group_lag

        try:
            rows = group_lag(KafkaSettings(bootstrap_servers=[self.broker.bootstrap]), self.group)
        except YuqingError:
            return None
        committed = {(t, p) for t, p, c, _ in rows if c >= 0}
        if len(committed) < self.plan.partitions:
            return None
        return sum(end - c for _, _, c, end in rows)

    # -- the run --------------------------------------------------------------------------
    def run(self) -> Report:
        from stream.kafka.admin import ensure_topic

        started = time.monotonic()
        plan = self.plan
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker.up()
        try:
            ensure_topic(KafkaSettings(bootstrap_servers=[self.broker.bootstrap]), self.topic, plan.partitions)
            self.producing.set()
            producer = threading.Thread(target=self._produce, name="chaos-producer", daemon=True)
            producer.start()
            for slot in self.slots:
                self._start(slot)
            chaos_until = started + plan.seconds * 0.7
            restarts_at = [started + plan.seconds * (0.25 + 0.3 * k / max(1, plan.broker_restarts))
                           for k in range(plan.broker_restarts)]
            outage_at = started + plan.seconds * 0.45 if plan.outage_s > 0 else None
            next_kill = time.monotonic() + self.rng.uniform(*plan.kill_every_s)
            bar = tqdm(total=int(plan.seconds), unit="s", desc="chaos", mininterval=2, disable=not self.progress)
            while time.monotonic() < chaos_until:
                now = time.monotonic()
                if restarts_at and now >= restarts_at[0]:
                    restarts_at.pop(0)
                    self._restart_broker()
                if outage_at is not None and now >= outage_at:
                    outage_at = None
                    with self._outage():
                        self._churn_for(plan.outage_s, next_kill)
                    next_kill = time.monotonic() + self.rng.uniform(*plan.kill_every_s)
                if time.monotonic() >= next_kill:
                    self._kill_someone()
                    next_kill = time.monotonic() + self.rng.uniform(*plan.kill_every_s)
                self._revive()
                time.sleep(0.2)
                bar.update(int(time.monotonic() - started) - bar.n)
            # Drain: everyone up, no more faults, until the group has committed every offset.
            self.produced_all.wait(max(0.0, started + plan.seconds - time.monotonic()))
            while time.monotonic() < started + plan.seconds:
                self._revive()
                if self.produced_all.is_set() and self._lag() == 0:
                    self.report.drained = True
                    break
                time.sleep(1.0)
                bar.update(int(time.monotonic() - started) - bar.n)
            bar.close()
            if not self.report.drained:
                self._record_deadline()
            for slot in self.slots:
                self._stop(slot, signal.SIGTERM)
            if self._producer_error is not None:
                raise YuqingError(f"the chaos producer failed: {self._producer_error!r}")
            self.report.seconds = time.monotonic() - started
            self._check()
        finally:
            for slot in self.slots:
                self._stop(slot, signal.SIGKILL)
            self.outage_file.unlink(missing_ok=True)
            with suppress(YuqingError):
                self.broker.down()
        return self.report

    def _record_deadline(self) -> None:
        """Where an undrained run stood: which partitions lag, and who held what, to tell a slow host
        from a stalled partition."""
        from stream.kafka.admin import group_lag

        try:
            rows = group_lag(KafkaSettings(bootstrap_servers=[self.broker.bootstrap]), self.group)
        except YuqingError as exc:
            rows, self.report.at_deadline = [], [f"lag unknown: {exc}"]
        self.report.at_deadline += [f"partition {p}: committed {c}, end {end}" for _, p, c, end in rows if c != end]
        self.report.at_deadline += [f"partition {p}: nothing committed" for p in
                                    sorted(set(range(self.plan.partitions)) - {p for _, p, _, _ in rows})]
        self.report.at_deadline += [slot.last_assignment() for slot in self.slots]

    def _churn_for(self, seconds: float, next_kill: float) -> None:
        """Keep killing and reviving consumers while the store refuses writes."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            if time.monotonic() >= next_kill:
                self._kill_someone()
                next_kill = time.monotonic() + self.rng.uniform(*self.plan.kill_every_s)
            self._revive()
            time.sleep(0.2)

    def _revive(self) -> None:
        for slot in self.slots:
            if not slot.alive and (slot.proc is None or self.rng.random() < 0.2):
                self._start(slot)

    # -- what a reader sees ---------------------------------------------------------------
    def _expected_rows(self) -> tuple[dict[str, set[str]], set[str]]:
        """Each package's version with its sequence heads (one `scored` row each per item), and the
        versions with an entity head (one `entities` row per item)."""
        from stream.core.manifest import read_manifest

        heads: dict[str, set[str]] = {}
        with_entities: set[str] = set()
        for package in self.plan.models:
            manifest = read_manifest(Path(package))
            heads[manifest.version] = {h for h, spec in manifest.heads.items() if spec["kind"] == "sequence"}
            if any(spec["kind"] == "token" for spec in manifest.heads.values()):
                with_entities.add(manifest.version)
        return heads, with_entities

    def _check(self) -> None:
        r = self.report
        scored: set[tuple[str, str, str]] = set()  # (id, model_version, task)
        items: set[str] = set()
        entities: set[tuple[str, str]] = set()  # (id, model_version)
        dead: set[tuple[int, int]] = set()
        versions: set[str] = set()
        for slot in self.slots:
            if not slot.store.exists():
                continue
            with Store(StoreSettings(dsn=f"chdb://{slot.store}", database=DATABASE)) as store:
                db = store.database
                rows = store.rows(f"SELECT id, model_version, task FROM {db}.scored FINAL")
                keys = {(str(i), str(v), str(t)) for i, v, t in rows}
                r.duplicated += len(rows) - len(keys)
                scored |= keys
                versions |= {v for _, v, _ in keys}
                ids = [str(i) for (i,) in store.rows(f"SELECT id FROM {db}.items FINAL")]
                r.duplicated += len(ids) - len(set(ids))
                items |= set(ids)
                # A reader of this store joins a score to its text here: a score without one lost it.
                for orphan in sorted({i for i, _, _ in keys} - set(ids))[:10]:
                    self._lost(f"{orphan}: scored in {slot.store.name} without its items row")
                sets = store.rows(f"SELECT id, model_version FROM {db}.entities FINAL")
                pairs = {(str(i), str(v)) for i, v in sets}
                r.duplicated += len(sets) - len(pairs)
                entities |= pairs
                letters = store.rows(
                    f"SELECT kafka_partition, kafka_offset FROM {db}.dead_letters FINAL WHERE kafka_topic = %(t)s",
                    {"t": self.topic},
                )
                offsets = {(int(p), int(o)) for p, o in letters}
                r.duplicated += len(letters) - len(offsets)
                dead |= offsets
        r.model_versions = sorted(versions)
        heads, with_entities = self._expected_rows()
        for (partition, offset), message in self.expected.items():
            if message.id is None:
                if (partition, offset) in dead:
                    r.dead_lettered += 1
                else:
                    self._lost(f"{message.kind} at {partition}:{offset}")
            elif (partition, offset) in dead:
                r.unexpected_dead_letters += 1
                r.dead_lettered += 1
            else:
                missing = [f"{v}/{t}" for v, tasks in heads.items() for t in sorted(tasks)
                           if (message.id, v, t) not in scored]
                missing += [f"{v}/entities" for v in sorted(with_entities) if (message.id, v) not in entities]
                missing += [] if message.id in items else ["items"]
                if missing:
                    self._lost(f"{message.id} ({message.kind}) at {partition}:{offset}: no {', '.join(missing)}")

    def _lost(self, what: str) -> None:
        self.report.lost += 1
        if len(self.report.lost_examples) < 10:
            self.report.lost_examples.append(what)


# -- the commands ----------------------------------------------------------------------------


@click.command("chaos")
@click.option("--minutes", type=click.FloatRange(min=0.5, max=10), default=10, show_default=True,
              help="How long the soak runs, drain included (at most 10).")
@click.option("--consumers", type=click.IntRange(min=1, max=8), default=3, show_default=True)
@click.option("--partitions", type=click.IntRange(min=1), default=6, show_default=True)
@click.option("--items", type=click.IntRange(min=1), default=30_000, show_default=True,
              help="Messages to produce (about 5% poison and 5% valid edge cases).")
@click.option("--models", "packages", multiple=True, required=True, type=click.Path(path_type=Path, exists=True),
              help="Model packages the consumers score with (repeatable).")
@click.option("--broker-restarts", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--outage", "outage_s", type=click.FloatRange(min=0), default=30, show_default=True,
              help="Seconds the stores refuse writes, once (0: never).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where the broker, stores and consumer logs go (default: a new folder under ./yuqing-data).")
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the report as JSON here.")
@click.option("--no-progress", is_flag=True)
def chaos_command(
    minutes: float, consumers: int, partitions: int, items: int, packages: tuple[Path, ...], broker_restarts: int,
    outage_s: float, seed: int, workdir: Path | None, json_out: Path | None, no_progress: bool,
) -> None:
    """Soak the consumer with kills, a broker restart and a store outage; prove nothing is lost or doubled."""
    plan = Plan(seconds=minutes * 60, consumers=consumers, partitions=partitions, items=items,
                models=list(packages), broker_restarts=broker_restarts, outage_s=outage_s, seed=seed)
    where = workdir or Path("yuqing-data") / f"chaos-{time.strftime('%Y%m%dT%H%M%S')}"
    report = Chaos(plan, where.resolve(), progress=not no_progress).run()
    for line in report.lines():
        click.echo(line)
    for example in report.lost_examples:
        click.echo(f"  lost: {example}")
    if json_out is not None:
        json_out.write_text(json.dumps(dataclasses.asdict(report), indent=2, ensure_ascii=False))
    if not report.ok:
        raise YuqingError(f"chaos found a broken promise; consumer logs in {where}/logs")


def _watch_outage(outage_file: Path, dsn: str, stop: threading.Event) -> None:
    """Detach `scored` while the outage file exists (every insert into it then fails), attach it after."""
    admin: Store | None = None
    detached = False
    while not stop.wait(0.2):
        want = outage_file.exists()
        if want == detached:
            continue
        try:
            admin = admin or Store(StoreSettings(dsn=dsn, database=DATABASE))
            admin.command(f"{'DETACH' if want else 'ATTACH'} TABLE {DATABASE}.scored")
            detached = want
        except YuqingError as exc:  # the schema may not exist yet; try again on the next tick
            log.debug("outage watcher: %s", exc)


def worker_main(argv: list[str]) -> None:
    """`python -m stream.tools.chaos OUTAGE_FILE run ARGS...`: `yuqing run` with the outage watcher."""
    from stream.cli import main

    outage_file, run_args = Path(argv[0]), argv[1:]
    dsn = run_args[run_args.index("--store") + 1]
    stop = threading.Event()
    threading.Thread(target=_watch_outage, args=(outage_file, dsn, stop), daemon=True).start()
    try:
        main(run_args)
    finally:
        stop.set()


if __name__ == "__main__":
    worker_main(sys.argv[1:])
