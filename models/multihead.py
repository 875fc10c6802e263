"""One encoder, many heads: the model behind a news-analysis package (torch; training extras only).

Every head reads the same encoder pass.  A sequence head (sentiment, category, risk) is one linear
layer on the mean of the token states under the attention mask; the token head (entities) is one
linear layer on every token state (BIO labels); `embedding` is the L2-normalized mean itself, for
story clustering.  Calibration temperatures are not part of the graph: they live in `heads.json`
and the scorer divides logits by them, so the parity gate compares raw logits.

On disk (`save` / `load`), a plain Hugging Face encoder checkpoint (config.json,
model.safetensors, tokenizer files) plus:
* ``heads.json``: ``{"format": 1, "pooling": "mean", "heads": [{"name", "kind", "labels"}, ...],
  "calibration": {head: {"temperature": T, ...}}}``;
* ``heads.safetensors``: ``<head>.weight`` (labels x hidden) and ``<head>.bias`` per head.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stream.core.errors import ModelError

HEADS_JSON = "heads.json"
HEADS_WEIGHTS = "heads.safetensors"
SEQUENCE, TOKEN = "sequence", "token"
EMBEDDING = "embedding"
ENTITY_TYPES = ("PER", "LOC", "ORG")
# BIO over the entity types; "O" first so that padding-free argmax defaults read as "no entity".
ENTITY_LABELS = ("O", *(f"{prefix}-{t}" for t in ENTITY_TYPES for prefix in ("B", "I")))


@dataclass(frozen=True)
class HeadSpec:
    name: str  # the task it serves: sentiment | category | risk | entities | ...
    kind: str  # SEQUENCE | TOKEN
    labels: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "labels": list(self.labels)}


@dataclass
class HeadsConfig:
    heads: list[HeadSpec]
    calibration: dict[str, dict[str, float]] = field(default_factory=dict)

    def head(self, name: str) -> HeadSpec:
        for spec in self.heads:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def temperature(self, name: str) -> float:
        return float(self.calibration.get(name, {}).get("temperature", 1.0))

    def to_json(self) -> dict[str, Any]:
        return {"format": 1, "pooling": "mean", "heads": [h.to_json() for h in self.heads],
                "calibration": self.calibration}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HeadsConfig:
        if data.get("format") != 1 or data.get("pooling") != "mean":
            raise ModelError(f"{HEADS_JSON}: unsupported format {data.get('format')!r} / "
                             f"pooling {data.get('pooling')!r}")
        heads = [HeadSpec(str(h["name"]), str(h["kind"]), tuple(map(str, h["labels"]))) for h in data["heads"]]
        names = [h.name for h in heads]
        if len(set(names)) != len(names) or EMBEDDING in names or any(h.kind not in (SEQUENCE, TOKEN) for h in heads):
            raise ModelError(f"{HEADS_JSON}: heads must have distinct names other than {EMBEDDING!r} and a "
                             f"kind of {SEQUENCE!r} or {TOKEN!r}: {names}")
        return cls(heads, {str(k): dict(v) for k, v in (data.get("calibration") or {}).items()})


def is_multihead(path: Path) -> bool:
    return (path / HEADS_JSON).is_file()


class MultiHeadModel(torch.nn.Module):
    """encoder -> {head name: logits, "embedding": pooled}; token heads give (batch, seq, labels)."""

    def __init__(self, encoder: Any, config: HeadsConfig, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = config
        hidden = int(encoder.config.hidden_size)
        self.dropout = torch.nn.Dropout(dropout)
        self.heads = torch.nn.ModuleDict({h.name: torch.nn.Linear(hidden, len(h.labels)) for h in config.heads})

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        states = self.encoder(**inputs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        out: dict[str, torch.Tensor] = {}
        for spec in self.config.heads:
            source = pooled if spec.kind == SEQUENCE else states
            out[spec.name] = self.heads[spec.name](self.dropout(source))
        out[EMBEDDING] = torch.nn.functional.normalize(pooled, dim=-1)
        return out

    @classmethod
    def from_base(cls, location: str, config: HeadsConfig) -> MultiHeadModel:
        """A pretrained encoder (no pooler: the heads pool themselves) with fresh heads."""
        from transformers import AutoModel
        from transformers import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # unused checkpoint weights (an MLM head, a pooler) are expected
        try:
            encoder = AutoModel.from_pretrained(location, add_pooling_layer=False)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"cannot load the encoder {location}: {str(exc).strip()[:300]}") from None
        finally:
            hf_logging.set_verbosity(verbosity)
        return cls(encoder, config)

    def save(self, out: Path) -> None:
        """The encoder as a plain checkpoint, then heads.json and heads.safetensors beside it."""
        from safetensors.torch import save_file

        self.encoder.save_pretrained(str(out))
        (out / HEADS_JSON).write_text(json.dumps(self.config.to_json(), indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
        weights = {f"{name}.{part}": param.detach().contiguous()
                   for name, head in self.heads.items() for part, param in head.named_parameters()}
        save_file(weights, str(out / HEADS_WEIGHTS))


def load(path: Path, **encoder_kwargs: Any) -> MultiHeadModel:
    """The model `MultiHeadModel.save` wrote, in eval mode."""
    from safetensors.torch import load_file
    from transformers import AutoModel

    try:
        config = HeadsConfig.from_json(json.loads((path / HEADS_JSON).read_text(encoding="utf-8")))
        encoder = AutoModel.from_pretrained(str(path), add_pooling_layer=False, **encoder_kwargs)
        weights = load_file(str(path / HEADS_WEIGHTS))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot load the multi-head checkpoint {path}: {str(exc).strip()[:300]}",
                         hint="re-run `yuqing train`") from None
    model = MultiHeadModel(encoder, config)
    state = {f"heads.{k}": v for k, v in weights.items()}
    missing = set(model.state_dict()) - set(state) - {k for k in model.state_dict() if k.startswith("encoder.")}
    if missing:
        raise ModelError(f"{path / HEADS_WEIGHTS} lacks {', '.join(sorted(missing))}")
    model.load_state_dict(state, strict=False)
    return model.eval()
