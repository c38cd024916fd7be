"""Assemble docs/BENCHMARKS.md from the per-stage benchmark pages in docs/bench/.

Each page is written by its stage's script under bench/ (the command that produced it is on the
page). Run: python bench/make_benchmarks_md.py
"""

from __future__ import annotations

from pathlib import Path

ORDER = ["simulate", "ingest", "detect", "encode", "sft", "grpo", "app", "app_decode",
         "app_decoding", "decode", "decode_int8", "decode_compile"]
ROOT = Path(__file__).resolve().parents[1]


def demote(lines: list[str]) -> list[str]:
    """Every heading one level down (the page title becomes a section), code fences untouched.

    >>> demote(["# T", "## A", "```", "## not a heading", "```", "### B"])
    ['## T', '### A', '```', '## not a heading', '```', '#### B']
    """
    out, fenced = [], False
    for ln in lines:
        if ln.startswith("```"):
            fenced = not fenced
        out.append("#" + ln if not fenced and ln.startswith("#") and ln.lstrip("#").startswith(" ")
                   else ln)
    return out


def main() -> None:
    pages = sorted((ROOT / "docs" / "bench").glob("*.md"),
                   key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem))
    parts = ["# EchoSonar benchmarks\n",
             "Measured on the project's 2-core CPU machine (no GPU was lent to the sessions that "
             "wrote these, so there are no CUDA rows). Simulator and detector figures were "
             "measured on a quiet machine (load about 1); ingest, encoder and GRPO pages while "
             "the machine was shared (load 8-12), so their wall-clock figures are lower bounds; "
             "the SFT, decoding and analyze pages of 2026-12-06 at load 5-9, with the variants "
             "they compare run interleaved in one process and CPU-time columns beside the wall "
             "times (what an idle core would take). Each page names its command, date, commit "
             "and load. "
             "The last section (from docs/SCALING.md) covers larger-scale use.\n"]
    for p in pages:
        parts.append("\n".join(demote(p.read_text().strip().splitlines())))
    scaling = ROOT / "docs" / "SCALING.md"
    if scaling.is_file():  # "scaling on paper": the same page, one level down
        lines = demote(scaling.read_text().strip().splitlines())
        lines[0] = "## Scaling on paper: " + lines[0].lstrip("# ")
        parts.append("\n".join(lines))
    from echosonar.io.atomic import atomic_write_text

    atomic_write_text(ROOT / "docs" / "BENCHMARKS.md", "\n\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
