"""The fine-tuned checkpoint an export starts from (torch + transformers: training extras only):
a sequence classifier (one output, `logits`), or a multi-head checkpoint (`models.multihead`: one
encoder, outputs `<head>_logits` per head and `embedding`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.core.errors import ModelError
from stream.core.manifest import EMBEDDING, SEQUENCE

if TYPE_CHECKING:
    from models.multihead import HeadsConfig

log = logging.getLogger(__name__)

REPORT = "training_report.json"
_SENTIMENT_WORDS = {"negative", "neutral", "positive", "neg", "neu", "pos", "负面", "中性", "正面"}
# Position tables of RoBERTa-style models start after the padding index.
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert"}
MULTIHEAD_TASK = "analysis"  # the task of a multi-head package: every head of one encoder pass


@dataclass
class Checkpoint:
    path: Path
    # a transformers PreTrainedModel, or a models.multihead.MultiHeadModel, in eval mode with eager
    # attention (fusable)
    model: Any
    tokenizer: Any  # its fast tokenizer
    labels: list[str]  # a classifier's; empty for a multi-head checkpoint (see `output_heads`)
    input_names: list[str]
    max_length: int
    report: dict[str, Any] = field(default_factory=dict)
    heads: HeadsConfig | None = None  # a multi-head checkpoint's heads and calibration

    @property
    def encoder(self) -> Any:
        """The transformers model whose embeddings and config an export works on."""
        return self.model.encoder if self.heads is not None else self.model

    @property
    def config(self) -> Any:
        return self.encoder.config

    def output_heads(self, task: str | None = None) -> dict[str, dict[str, Any]]:
        """head -> its manifest entry (kind, labels, ONNX output; temperature and ECE where
        calibrated; the embedding's dimension), in graph output order."""
        if self.heads is None:
            return {self.task(task): {"kind": SEQUENCE, "labels": list(self.labels), "output": "logits"}}
        specs: dict[str, dict[str, Any]] = {}
        for head in self.heads.heads:
            spec: dict[str, Any] = {"kind": head.kind, "labels": list(head.labels), "output": f"{head.name}_logits"}
            calibration = dict(self.heads.calibration.get(head.name) or {})
            if "temperature" in calibration:
                spec["temperature"] = float(calibration.pop("temperature"))
                spec["ece"] = calibration.pop("ece", calibration)
            specs[head.name] = spec
        specs[EMBEDDING] = {"kind": EMBEDDING, "output": EMBEDDING, "dim": int(self.config.hidden_size)}
        return specs

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The model on named input tensors: output name -> tensor, as the ONNX graph names them."""
        if self.heads is None:
            return {"logits": self.model(**inputs, return_dict=True).logits}
        found = self.model(**inputs)
        return {spec["output"]: found[head] for head, spec in self.output_heads().items()}

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else 0)

    def task(self, override: str | None = None) -> str:
        if override:
            return override
        if self.heads is not None:
            return MULTIHEAD_TASK
        if self.report.get("task"):
            return str(self.report["task"])
        return "sentiment" if {x.lower() for x in self.labels} <= _SENTIMENT_WORDS else "classification"

    def name(self, override: str | None = None) -> str:
        return override or str(self.report.get("name") or self.path.resolve().name)

    def base_model(self) -> str | None:
        base = self.report.get("base_model") or self.report.get("base")
        if isinstance(base, dict):
            base = base.get("description") or base.get("spec")
        return str(base) if base else None

    def test_metrics(self) -> dict[str, Any]:
        """Scalar test-split metrics of the training report (accuracy, macro_f1, ...); of a
        multi-head checkpoint also each head's, under its name."""
        test = self.report.get("test_metrics") or self.report.get("test") or {}
        if not isinstance(test, dict):
            return {}
        found = _scalars(test)
        if self.heads is not None:
            found |= {h.name: _scalars(test[h.name]) for h in self.heads.heads if isinstance(test.get(h.name), dict)}
        return found

    def training_summary(self) -> dict[str, Any] | None:
        """The training report without host paths and per-epoch detail, for the manifest."""
        if not self.report:
            return None
        return _without_keys(self.report, {"location", "epochs"})


def read_report(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / REPORT).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("ignoring unreadable %s: %s", path / REPORT, exc)
        return {}
    return data if isinstance(data, dict) else {}


def load_checkpoint(path: Path, max_length: int | None = None) -> Checkpoint:
    """Load a sequence classifier saved by `yuqing train` (or any HF checkpoint with id2label), or
    a multi-head checkpoint (`models.multihead`)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from models import multihead

    hf_logging.disable_progress_bar()  # the export shows its own

    if not path.is_dir():
        raise ModelError(f"checkpoint {path} does not exist", hint="pass the directory `yuqing train` wrote")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} has no config.json: not a transformers checkpoint")
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:
        raise ModelError(f"cannot read {path / 'config.json'}: {exc}") from None
    heads = None
    if multihead.is_multihead(path):
        model = multihead.load(path, attn_implementation="eager")
        heads, labels = model.config, []
    else:
        labels = _labels(config, path)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="eager")
        except Exception as exc:
            raise ModelError(f"cannot load the weights in {path}: {str(exc).strip()[:400]}",
                             hint="the checkpoint is incomplete or corrupt; re-run `yuqing train`") from None
    model.eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise ModelError(f"cannot load the tokenizer in {path}: {str(exc).strip()[:400]}") from None
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ModelError(f"the tokenizer in {path} has no tokenizers backend (tokenizer.json)",
                         hint="the stream tokenizes with the `tokenizers` library only")
    report = read_report(path)
    limit = _position_limit(config, tokenizer)
    trained = report.get("max_length") or (report.get("hyperparameters") or {}).get("max_length")
    wanted = max_length or int(trained or 0) or min(limit, 512)
    if not 8 <= wanted <= limit:
        raise ModelError(f"--max-length {wanted} is outside 8..{limit} for {path.name}")
    names: list[str] = [n for n in ("input_ids", "attention_mask", "token_type_ids")
                        if n in tokenizer.model_input_names]
    return Checkpoint(path, model, tokenizer, labels, names, wanted, report, heads)


def _scalars(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if isinstance(v, int | float | str)}


def _without_keys(value: Any, drop: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: _without_keys(v, drop) for k, v in value.items() if k not in drop}
    if isinstance(value, list):
        return [_without_keys(v, drop) for v in value]
    return value


def _labels(config: Any, path: Path) -> list[str]:
    id2label = getattr(config, "id2label", None) or {}
    n = int(getattr(config, "num_labels", len(id2label)))
    labels = [id2label.get(i, id2label.get(str(i))) for i in range(n)]
    if n < 2 or any(label is None for label in labels) or len(set(labels)) != n:
        raise ModelError(f"{path / 'config.json'} has no usable id2label for {n} labels: {id2label!r}",
                         hint="a sequence classifier needs distinct label names for every output")
    return [str(label) for label in labels]


def _position_limit(config: Any, tokenizer: Any) -> int:
    positions = int(getattr(config, "max_position_embeddings", 512))
    if getattr(config, "model_type", "") in _OFFSET_POSITIONS:
        positions -= int(getattr(config, "pad_token_id", 1) or 1) + 1
    model_max = int(getattr(tokenizer, "model_max_length", positions) or positions)
    return min(positions, model_max) if model_max < 1_000_000 else positions
