"""`yuqing bench`: the scorer's throughput against the transformers pipeline and end to end, in one run.

    yuqing bench                       # the demo's packages (else MiniLM): engines, bucketing, Kafka -> chdb
    yuqing bench --package PKG         # a shipped package; a multi-head one also against --baseline
    yuqing bench --device cuda         # GPU: fp16 at batch 64..1024 and the fraction of peak
    yuqing bench --quick --json out.json

It is a benchmark, not a test: run it on a quiet machine and read the host block of its report.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import click
from click.core import ParameterSource

from stream.core.errors import YuqingError
from stream.core.host import usable_cpus

log = logging.getLogger(__name__)

DEFAULT_OUT_DIR = Path("artifacts/bench")
DEFAULTS = {  # device -> (texts, batch sizes); --quick -> the same, small
    "cpu": (256, (1, 8, 32, 128)),
    "cuda": (8192, (64, 256, 1024)),
}
QUICK = {"cpu": (48, (1, 8)), "cuda": (512, (64,))}
GROUPS = ("engines", "runs", "bucketing", "heads", "trim", "e2e", "stories", "panels", "burst", "storage")


def _batch_sizes(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        sizes = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter("use comma-separated integers, e.g. 1,8,32,128") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("batch sizes must be positive")
    return sizes


@click.command("bench")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Report file (default: artifacts/bench/bench-DEVICE-TIME.json).")
@click.option("--quick", is_flag=True, help="A few texts and batch sizes: checks the harness, not the speed.")
@click.option("--texts", "n_texts", type=click.IntRange(1), help="Texts per case (default 256 on CPU, 8192 on GPU).")
@click.option("--batch-sizes", callback=_batch_sizes, help="Comma-separated (default 1,8,32,128; GPU 64,256,1024).")
@click.option("--model-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A transformers checkpoint (default: the demo's, else all-MiniLM-L6-v2 with a 2-class head).")
@click.option("--package", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The model package to time (default: what `yuqing demo` built under yuqing-data/packages, "
              "else --model-dir or all-MiniLM-L6-v2 exported into the bench cache; the run says which).")
@click.option("--baseline", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A single-classifier package on the same base, for a multi-head --package's cost "
              "(default: the demo's single-classifier package).")
@click.option("--threads", type=click.IntRange(1),
              help="Threads for torch and ONNX Runtime alike (default: all cores).")
@click.option("--seed", default=0, show_default=True, help="Which texts are drawn.")
@click.option("--no-e2e", is_flag=True, help="Skip the Kafka -> scoring -> store case.")
@click.option("--only", "groups", type=click.Choice(GROUPS),
              multiple=True,
              help="Run only these groups of cases (repeatable); `panels` alone times the dashboards' SQL, "
              "`burst` alone measures `yuqing run`'s peak RSS under a burst of huge items, `storage` alone the "
              "store's bytes per item and a batch's time in the models and the insert.")
@click.option("--burst-items", default=2000, show_default=True, type=click.IntRange(1),
              help="`--only burst`: items of about 1 MB each.")
@click.option("--panel-items", default=2_100_000, show_default=True, type=click.IntRange(1),
              help="Synthetic items for `--only panels` (about 2.4 scored rows each).")
@click.option("--bootstrap", help="Kafka for the end-to-end case (default: the settings').")
@click.option("--peak-tflops", type=float, help="The GPU's dense fp16 peak, where the built-in table lacks it.")
@click.option("--case-timeout", default=1200, show_default=True, type=click.IntRange(10), help="Seconds per case.")
@click.option("--spin", is_flag=True, help="Let idle torch/ORT threads spin (their default) instead of sleeping; "
              "faster on an idle dedicated host, much slower on a shared one.")
@click.option("--runs", type=click.IntRange(1), help="ONNX sub-batches run at once, sharing the threads (default: "
              "as the consumer runs them, one per thread on CPU; 1: one run on every thread).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_context
def bench_command(ctx: click.Context, device: str, json_out: Path | None, quick: bool, n_texts: int | None,
                  batch_sizes: tuple[int, ...] | None, model_dir: Path | None, package: Path | None,
                  baseline: Path | None, threads: int | None, seed: int, no_e2e: bool, groups: tuple[str, ...],
                  burst_items: int, panel_items: int,
                  bootstrap: str | None, peak_tflops: float | None,
                  case_timeout: int, spin: bool, runs: int | None, no_progress: bool) -> None:
    """Throughput and latency: transformers pipeline vs ONNX fp32/int8 (fp16 on GPU), length
    bucketing, and the consumer end to end vs raw ONNX Runtime, on the same real texts; or, with
    `--only panels`, every dashboard panel's SQL on millions of synthetic rows."""
    if "panels" in groups:
        if len(groups) > 1:
            raise click.UsageError("--only panels runs alone")
        _bench_panels(json_out, panel_items, progress=not no_progress)
        return
    if "burst" in groups:
        if len(groups) > 1:
            raise click.UsageError("--only burst runs alone")
        _bench_burst(ctx, json_out, bootstrap, package, burst_items, progress=not no_progress)
        return
    if "storage" in groups:
        if len(groups) > 1:
            raise click.UsageError("--only storage runs alone")
        _bench_storage(json_out, package)
        return
    from stream.tools.bench.run import BenchOptions, run_bench

    root = ctx.find_root()
    config_path = (root.obj or {}).get("config_path") if isinstance(root.obj, dict) else None
    default_texts, default_sizes = (QUICK if quick else DEFAULTS)[device]
    note = ""
    if package is None or baseline is None:
        from stream.tools.bench.subjects import default_subject

        found = default_subject()
        if package is None and model_dir is None:
            package, model_dir, note = found.package, found.checkpoint, found.note
            baseline = baseline or found.baseline
            click.echo(f"bench subject: {note}", err=True)
        elif baseline is None and found.baseline is not None and found.baseline != package:
            baseline = found.baseline
    options = BenchOptions(
        device=device,
        quick=quick,
        n_texts=n_texts or default_texts,
        batch_sizes=batch_sizes or default_sizes,
        model_dir=model_dir,
        package=package,
        baseline=baseline,
        note=note,
        threads=threads or usable_cpus(),
        seed=seed,
        e2e=not no_e2e,
        groups=groups,
        bootstrap=bootstrap,
        config_path=Path(config_path) if config_path else None,
        peak_tflops=peak_tflops,
        case_timeout=case_timeout,
        progress=not no_progress,
        spin=spin,
        runs=runs or 0,
    )
    out = json_out or DEFAULT_OUT_DIR / f"bench-{device}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    report = run_bench(options, command=command_line(ctx))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    from stream.tools.bench.report import ratio_lines

    host = report["host"]
    click.echo(f"absolute figures are this host's ({host['cpu_model']}, {options.threads} threads, load "
               f"{host['load_average'][0]}); ratios compare cases of this one run")
    click.echo(report["table"])
    click.echo(ratio_lines(report["ratios"]))
    from stream.tools.bench.cpu import lines

    click.echo(lines(report))
    click.echo(f"report: {out}")
    failed = [c["name"] for c in report["cases"] if "error" in c]
    if failed:
        raise YuqingError(f"{len(failed)} bench case(s) failed: {', '.join(failed)}", hint=f"see {out}")


def _bench_panels(json_out: Path | None, items: int, progress: bool) -> None:
    from stream.tools.bench.panels import bench_panels

    report = bench_panels(items, progress=lambda line: click.echo(line, err=True) if progress else None)
    out = json_out or DEFAULT_OUT_DIR / f"bench-panels-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    click.echo(report["table"])
    click.echo(f"report: {out}")


def _bench_burst(ctx: click.Context, json_out: Path | None, bootstrap: str | None, package: Path | None,
                 items: int, progress: bool) -> None:
    from stream.core.cli import settings_from
    from stream.tools.bench.burst import bench_burst
    from stream.tools.bench.subjects import default_subject

    packages = [package] if package is not None else [p for p in [default_subject().package] if p is not None]
    if not packages:
        raise click.UsageError("--only burst needs --package PKG (or the demo's package: run `make demo`)")
    servers = [bootstrap] if bootstrap else settings_from(ctx).kafka.bootstrap_servers
    report = bench_burst(",".join(servers), packages, items=items,
                         progress=lambda line: click.echo(line, err=True) if progress else None)
    out = json_out or DEFAULT_OUT_DIR / f"bench-burst-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    click.echo(report["table"])
    click.echo(f"report: {out}")
    if not report["complete"]:
        raise YuqingError("the burst was not scored completely", hint=f"see {out}")


def _bench_storage(json_out: Path | None, package: Path | None) -> None:
    from stream.tools.bench.storage import run_storage
    from stream.tools.bench.subjects import default_subject

    packages = [package] if package is not None else [p for p in [default_subject().package] if p is not None]
    report = run_storage(5000, 256, 40, packages, share_items=1024)
    out = json_out or DEFAULT_OUT_DIR / f"bench-storage-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    click.echo(json.dumps(report, ensure_ascii=False, indent=2))
    click.echo(f"report: {out}")


def command_line(ctx: click.Context) -> str:
    """The options given on the command line, as a command to run again."""
    parts = ["yuqing bench"]
    for param in ctx.command.params:
        name = param.name or ""
        if not isinstance(param, click.Option) or ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        value, flag = ctx.params[name], param.opts[0]
        if param.is_flag:
            parts.append(flag)
        elif param.multiple:
            parts += [f"{flag} {v}" for v in value]
        elif isinstance(value, tuple):
            parts.append(f"{flag} {','.join(map(str, value))}")
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts)

