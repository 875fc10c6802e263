"""Where converted base encoders and downloaded corpora are kept between runs."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "YUQING_CACHE"


def cache_root() -> Path:
    """``$YUQING_CACHE`` if set, else ``~/.cache/yuqing``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "yuqing"
