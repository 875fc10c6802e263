"""Type-check dashboard JSON against Grafana's own schema (@grafana/schema) with the TypeScript compiler.

Each dashboard becomes a module (see `build.render_ts`) compiled in a short-lived folder inside
``schema_check/`` so that it resolves the pinned ``node_modules`` there.  tsc's errors are mapped
back to the dashboard and panel they concern.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dashboards.build import SCHEMA_CHECK_DIR, TsModule, render_ts
from stream.core.errors import ConfigError

_ERROR = re.compile(r"^(?P<file>.+?)\((?P<line>\d+),(?P<col>\d+)\): error (?P<code>TS\d+): (?P<message>.*)$")


@dataclass(frozen=True)
class TypeIssue:
    dashboard: str
    where: str
    code: str
    message: str


def tsc_path(schema_dir: Path = SCHEMA_CHECK_DIR) -> Path:
    tsc = schema_dir / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        raise ConfigError(
            f"the TypeScript compiler is not installed in {schema_dir}",
            hint="run `make typecheck-deps` (npm ci there), or pass --skip-typecheck",
        )
    return tsc


def typecheck(dashboards: dict[str, dict[str, Any]], schema_dir: Path = SCHEMA_CHECK_DIR,
              timeout_s: float = 300) -> list[TypeIssue]:
    """Compile every dashboard against the schema; an empty list means all of them type-check."""
    tsc = tsc_path(schema_dir)
    work = Path(tempfile.mkdtemp(prefix=".check-", dir=schema_dir))
    try:
        modules: dict[str, tuple[str, TsModule]] = {}
        for name, data in dashboards.items():
            stem = re.sub(r"[^A-Za-z0-9_-]", "_", Path(name).stem)
            module = render_ts(data, name)
            (work / f"{stem}.ts").write_text(module.text, encoding="utf-8")
            modules[f"{stem}.ts"] = (name, module)
        (work / "tsconfig.json").write_text(
            json.dumps({"extends": "../tsconfig.json", "include": ["*.ts"]}), encoding="utf-8"
        )
        # The generated modules import "../wire": the folder sits next to wire.ts on purpose.
        proc = subprocess.run(
            [str(tsc), "-p", str(work / "tsconfig.json"), "--pretty", "false"],
            cwd=schema_dir, capture_output=True, text=True, timeout=timeout_s, check=False,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    issues = _parse(proc.stdout + proc.stderr, modules)
    if proc.returncode != 0 and not issues:
        raise ConfigError(f"tsc failed without reporting errors (exit {proc.returncode}): {proc.stdout[-500:]}")
    return issues


def _parse(output: str, modules: dict[str, tuple[str, TsModule]]) -> list[TypeIssue]:
    issues: list[TypeIssue] = []
    for raw in output.splitlines():
        match = _ERROR.match(raw.strip())
        if match is None:
            if issues and raw.startswith(" "):  # tsc continues long messages on indented lines
                last = issues[-1]
                issues[-1] = TypeIssue(last.dashboard, last.where, last.code, last.message + " " + raw.strip())
            continue
        file_name = Path(match["file"]).name
        dashboard, module = modules.get(file_name, (file_name, TsModule("")))
        issues.append(TypeIssue(dashboard, module.where(int(match["line"])), match["code"], match["message"]))
    return issues
