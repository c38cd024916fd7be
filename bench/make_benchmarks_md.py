"""Assemble docs/BENCHMARKS.md from the per-stage benchmark pages in docs/bench/.

Each page is written by its stage's script under bench/ (the command that produced it is on the
page). Run: python bench/make_benchmarks_md.py
"""

from __future__ import annotations

from pathlib import Path

ORDER = ["simulate", "ingest", "detect", "encode", "sft", "grpo", "app"]
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    pages = sorted((ROOT / "docs" / "bench").glob("*.md"),
                   key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem))
    parts = ["# EchoSonar benchmarks\n",
             "Measured on the project's 2-core CPU machine (no GPU was lent to the sessions that "
             "wrote these). The machine was shared with other jobs while most of these ran, so "
             "wall-clock figures are lower bounds; each page names its command and conditions. "
             "Larger-scale use: docs/SCALING.md.\n"]
    for p in pages:
        body = p.read_text().strip()
        lines = body.splitlines()
        if lines and lines[0].startswith("# "):
            lines[0] = "## " + lines[0][2:]
        parts.append("\n".join(
            ("#" + ln if ln.startswith("## ") and i > 0 else ln) for i, ln in enumerate(lines)))
    from echosonar.io.atomic import atomic_write_text

    atomic_write_text(ROOT / "docs" / "BENCHMARKS.md", "\n\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
