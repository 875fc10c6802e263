"""The texts the parity gate runs: a dataset's held-out test split, every head's own (`auto`), a
CSV/JSONL file, or a built-in set."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.core.errors import DataError

AUTO_CHECK = "auto"  # the training data's held-out split (every head's own, for a multi-head checkpoint)
TEXT_COLUMNS = ("text", "sentence", "content", "review", "title")
LABEL_COLUMNS = ("label", "labels", "sentiment", "topic", "category")


@dataclass(frozen=True)
class CheckSet:
    texts: list[str]
    gold: list[str] | None  # label names, when the data has them
    source: str
    # Several heads' own texts one after another: each head's label names, None on the others' texts.
    head_gold: dict[str, list[str | None]] = field(default_factory=dict)

    def gold_indices(self, labels: Sequence[str], head: str | None = None) -> list[int | None] | None:
        """Gold labels (of `head`, where the set holds several heads' texts) as output indices, None
        on texts that are not that head's; None when they are absent or not this model's labels."""
        named: Sequence[str | None] | None = self.head_gold.get(head or "") if self.head_gold else self.gold
        if named is None:
            return None
        index = {name: i for i, name in enumerate(labels)}
        if not all(g is None or g in index for g in named):
            return None
        return [None if g is None else index[g] for g in named]


def load_head_check_sets(specs: Mapping[str, str], split: str, limit: int) -> CheckSet:
    """Every head's own held-out texts: the `split` of its dataset spec, at most `limit` per head
    (stratified by label), one head after another, each labelled for its own head only."""
    parts = {head: _from_dataset(spec, limit, split) for head, spec in specs.items()}
    texts = [text for part in parts.values() for text in part.texts]
    head_gold: dict[str, list[str | None]] = {}
    start = 0
    for head, part in parts.items():
        labels: list[str | None] = [None] * len(texts)
        own: list[str | None] = list(part.gold) if part.gold is not None else [None] * len(part.texts)
        labels[start : start + len(part.texts)] = own
        head_gold[head] = labels
        start += len(part.texts)
    return CheckSet(texts, None, "; ".join(f"{head}: {part.source}" for head, part in parts.items()), head_gold)


def load_check_set(spec: str | None, limit: int = 1000) -> CheckSet:
    """`spec`: None (built-in sentences), a models.datasets spec (its held-out test split), or a
    CSV/JSONL file with a text column and no labels (all of its rows)."""
    if spec is None:
        texts, gold = zip(*BUILTIN, strict=True)
        return CheckSet(list(texts), list(gold), "builtin")
    try:
        return _from_dataset(spec, limit)
    except (DataError, ImportError):
        path = Path(spec)
        if not path.is_file():
            raise
    return _from_rows(_read_rows(path), f"file:{path.name}", limit)


def load_split(spec: str, split: str, limit: int) -> CheckSet | None:
    """Another split of a dataset spec (the int8 search's calibration and selection texts); None
    when `spec` is not a dataset or the split is empty."""
    try:
        return _from_dataset(spec, limit, split)
    except (DataError, ImportError):
        return None


def _from_dataset(spec: str, limit: int, split: str = "test") -> CheckSet:
    from models.datasets import load_dataset, stratified_limit

    examples = load_dataset(spec).splits()[split]  # type: ignore[index]
    if not examples:
        raise DataError(f"the {split} split of {spec} is empty", hint="the parity gate needs held-out texts")
    examples = stratified_limit(examples, limit) if len(examples) > limit else examples
    return CheckSet([e.text for e in examples], [e.label for e in examples], f"{spec} ({split} split)")


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"check data {path} does not exist")
    try:
        if path.suffix.lower() in (".jsonl", ".json"):
            text = path.read_text(encoding="utf-8")
            if path.suffix.lower() == ".json":
                data = json.loads(text)
                return data if isinstance(data, list) else data.get("rows", [])
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        with path.open(encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read check data {path}: {exc}") from None


def _from_rows(rows: list[dict[str, Any]], source: str, limit: int) -> CheckSet:
    rows = [r for r in rows if isinstance(r, dict)][:limit]
    if not rows:
        raise DataError(f"check data {source} has no rows")
    text_col = next((c for c in TEXT_COLUMNS if c in rows[0]), None)
    if text_col is None:
        raise DataError(f"check data {source} has no text column", hint=f"name it one of {', '.join(TEXT_COLUMNS)}")
    label_col = next((c for c in LABEL_COLUMNS if c in rows[0]), None)
    texts = [str(r.get(text_col) or "") for r in rows]
    gold = [str(r.get(label_col)) for r in rows] if label_col else None
    return CheckSet(texts, gold, source)


# Mixed Chinese and English news-like sentences of varied length, with a sentiment label each.
BUILTIN: tuple[tuple[str, str], ...] = (
    ("The new subway line opened ahead of schedule and commuters praised the service.", "positive"),
    ("Residents complained about the chemical smell near the river for the third week.", "negative"),
    ("The city council will meet on Tuesday to discuss the budget.", "neutral"),
    ("Stocks rallied after the central bank signalled steady interest rates.", "positive"),
    ("Flooding forced thousands of families from their homes overnight.", "negative"),
    ("The museum extends its opening hours during the summer holidays.", "neutral"),
    ("Local farmers report a record harvest thanks to favourable weather.", "positive"),
    ("The factory recall affects nearly two hundred thousand cars with faulty brakes.", "negative"),
    ("Officials released the quarterly population statistics this morning.", "neutral"),
    ("Volunteers cleaned the beach and collected over a tonne of plastic.", "positive"),
    ("Hospital waiting times have grown longer despite promises of reform.", "negative"),
    ("A new bus timetable takes effect next Monday.", "neutral"),
    ("Great service, friendly staff, would absolutely recommend!", "positive"),
    ("Terrible experience, the delivery was late and the box was broken.", "negative"),
    ("The report is available on the ministry website.", "neutral"),
    ("Scientists celebrated the successful launch of the weather satellite.", "positive"),
    ("Investors fear the merger will lead to thousands of job cuts.", "negative"),
    ("The conference takes place in the exhibition centre.", "neutral"),
    ("Air quality improved markedly after the new emission rules.", "positive"),
    ("The data breach exposed personal records of millions of customers.", "negative"),
    ("Wow.", "positive"),
    ("Awful.", "negative"),
    ("OK.", "neutral"),
    ("Shares of the electric carmaker fell sharply after it missed delivery targets, while analysts "
     "questioned whether demand could recover before the end of the year given rising competition, "
     "higher financing costs for buyers, and a slowdown in subsidies across several key markets.", "negative"),
    ("After months of negotiations, the two provinces signed an agreement to share water resources, "
     "a deal that officials on both sides described as a model for regional cooperation and which "
     "environmental groups welcomed as a long overdue step toward protecting the river basin.", "positive"),
    ("The statistics bureau said it would publish revised figures for industrial output, retail sales "
     "and fixed-asset investment next month, following a routine review of its survey methods.", "neutral"),
    ("Customers say the new app update is fast and easy to use.", "positive"),
    ("Passengers were stranded for hours after the airline cancelled dozens of flights.", "negative"),
    ("The school district announced the calendar for the next academic year.", "neutral"),
    ("The rescue team saved all twelve hikers trapped on the mountain.", "positive"),
    ("Prices of vegetables soared after the storm damaged greenhouses.", "negative"),
    ("The bridge will be closed for inspection on Sunday morning.", "neutral"),
    ("新地铁线路提前开通，市民纷纷点赞。", "positive"),
    ("居民投诉河边化工异味已经持续三周。", "negative"),
    ("市议会将于周二召开会议讨论预算。", "neutral"),
    ("央行释放稳定利率信号后股市大涨。", "positive"),
    ("洪水导致数千户家庭连夜撤离。", "negative"),
    ("博物馆暑期延长开放时间。", "neutral"),
    ("天气适宜，农民迎来创纪录的丰收。", "positive"),
    ("工厂召回近二十万辆刹车有缺陷的汽车。", "negative"),
    ("统计部门今天上午发布了季度人口数据。", "neutral"),
    ("志愿者清理海滩，收集了一吨多塑料垃圾。", "positive"),
    ("尽管承诺改革，医院的候诊时间却越来越长。", "negative"),
    ("新的公交时刻表下周一起实施。", "neutral"),
    ("服务很好，员工热情，强烈推荐！", "positive"),
    ("体验太差了，快递迟到，包装还破了。", "negative"),
    ("报告已在部门网站上公布。", "neutral"),
    ("气象卫星发射成功，科学家们欢欣鼓舞。", "positive"),
    ("投资者担心合并将导致数千人失业。", "negative"),
    ("会议将在会展中心举行。", "neutral"),
    ("新排放标准实施后空气质量明显改善。", "positive"),
    ("数据泄露事件暴露了数百万客户的个人信息。", "negative"),
    ("太棒了！", "positive"),
    ("糟透了。", "negative"),
    ("好的。", "neutral"),
    ("电动车制造商因未达到交付目标股价大跌，分析师质疑在竞争加剧、购车融资成本上升以及多个关键市场补贴放缓的情况下，"
     "年底前需求能否恢复，部分机构已下调全年销量预期，并提醒投资者关注供应链和原材料价格的进一步波动。", "negative"),
    ("经过数月谈判，两省签署水资源共享协议，双方官员称其为区域合作的典范，环保组织也对此表示欢迎，"
     "认为这是保护流域生态的重要一步，协议还包括联合监测水质、共同治理污染和建立补偿机制等内容。", "positive"),
    ("统计局表示，将在下月公布工业产出、社会消费品零售总额和固定资产投资的修订数据，"
     "此次修订源于对调查方法的例行审查。", "neutral"),
    ("用户表示新版应用速度快、操作简单。", "positive"),
    ("航空公司取消数十个航班，乘客滞留数小时。", "negative"),
    ("学区公布了下一学年的校历。", "neutral"),
    ("救援队成功解救被困山上的十二名游客。", "positive"),
    ("暴雨损毁大棚，蔬菜价格飙升。", "negative"),
    ("大桥将于周日上午封闭检修。", "neutral"),
)
