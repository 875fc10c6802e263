"""`yuqing bench`: throughput and latency of the scorer, the transformers pipeline and the consumer."""

from stream.tools.bench.cli import bench_command

__all__ = ["bench_command"]
