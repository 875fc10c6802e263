"""`python -m stream.bench`: the bench without the `yuqing` entry point (for a bare GPU host)."""

import sys

from stream.bench.cli import bench_command
from stream.errors import YuqingError

if __name__ == "__main__":
    try:
        bench_command.main(args=sys.argv[1:], prog_name="python -m stream.bench")
    except YuqingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
