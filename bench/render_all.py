"""How long rendering and strictly validating every stack takes (issue target: under 5 s).

    uv run python bench/render_all.py

Times, in one process, building every stack from its file, writing its YAML, and validating every
object against each supported Kubernetes version; prints one row per stack and the total.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from components import cli, render, validation


def main() -> None:
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for name in cli.stack_names(cli.STACKS):
            begin = time.perf_counter()
            stack = cli.load_stack(name)
            render.write(stack, Path(folder) / name)
            rendered = time.perf_counter()
            problems = validation.problems(stack.objects())
            done = time.perf_counter()
            rows.append((name, len(stack.objects()), rendered - begin, done - rendered, len(problems)))
    total = time.perf_counter() - started
    print(f"{'stack':<8} {'objects':>7} {'render s':>9} {'validate s':>11} {'problems':>9}")
    for name, count, render_s, validate_s, problems in rows:
        print(f"{name:<8} {count:>7} {render_s:>9.3f} {validate_s:>11.3f} {problems:>9}")
    versions = ", ".join(validation.SUPPORTED_VERSIONS)
    print(f"all {len(rows)} stacks rendered and validated against {versions} in {total:.2f} s")


if __name__ == "__main__":
    main()
