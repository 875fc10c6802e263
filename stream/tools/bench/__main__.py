"""`python -m stream.tools.bench`: the bench without the `yuqing` entry point (for a bare GPU host)."""

import sys

from stream.core.errors import YuqingError
from stream.tools.bench.cli import bench_command

if __name__ == "__main__":
    try:
        bench_command.main(args=sys.argv[1:], prog_name="python -m stream.tools.bench")
    except YuqingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
