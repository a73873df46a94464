"""Summarise a py-spy profile (``py-spy record --format raw``: one collapsed stack a line, then its
sample count) into the functions that cost the most.

    python -m benchmarks.hotspots PROFILE.txt [--top 25] [--focus orchestrator/]

"self" is the share of samples with the function on top of the stack (its own code); "total"
the share with it anywhere in the stack (its callees included). py-spy samples only threads that
are running, not idle ones, so shares are of CPU time.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"\s*\(([^()]*?)(?::\d+)?\)$")


def _function(frame: str) -> str:
    """``name (path/file.py:123)`` -> ``name (path/file.py)``: aggregate over lines."""
    match = _LINE.search(frame)
    if match is None:
        return frame.strip()
    return f"{frame[: match.start()].strip()} ({match.group(1)})"


def summarise(path: Path) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            anywhere[name] += count
    return total, own, anywhere


def render(path: Path, top: int, focus: str | None) -> str:
    total, own, anywhere = summarise(path)
    if total == 0:
        return f"{path}: no samples"
    lines = [f"{path}: {total} samples"]

    def table(title: str, counts: Counter[str]) -> None:
        lines.append(f"\n{title}")
        shown = 0
        for name, count in counts.most_common():
            if focus is not None and focus not in name:
                continue
            lines.append(f"  {100 * count / total:5.1f}%  {name}")
            shown += 1
            if shown >= top:
                break

    table("self (own code):", own)
    table("total (with callees):", anywhere)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hotspots")
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--focus", help="only functions whose name or file contains this")
    args = parser.parse_args(argv)
    print(render(args.profile, args.top, args.focus))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
