"""The five-study example of docs/TRAIN_YOUR_STUDIES.md: a simulated set turned into a user's files.

``build_example(root, studies=5)`` simulates ``studies`` studies, then writes what a site would
have, and nothing more::

    root/studies/<study id>/clipNN.dcm   the DICOM files (no manifest, no study.json: no views,
                                         boxes, phases, sectors or targets)
    root/labels.csv                      study + one 0/1 column per finding [+ split]
    root/reports.jsonl                   {"study": id, "report": {section: text}}  (optional)
    root/views.csv                       study,file,view  (optional)

Study identifiers look like a site's (``ECHO-0001`` ...), not the simulator's keys. The same
builder makes the manifest-free set of the comparison in the walkthrough (``--studies 100``)::

    python tests/dataset/example.py --studies 100 --out data/user100 --sim data/sim100
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

from echosonar.taxonomy import FINDINGS


def simulate(sim: Path, studies: int, seed: int = 0, image_size: int = 64,
             split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> Path:
    """A simulated set with its manifest (the ground truth the user does not have)."""
    from echosonar.config.sim import SimConfig
    from echosonar.simulate.writer import write_study_set

    cfg = SimConfig(studies=studies, seed=seed, image_size=image_size,
                    split_fractions=list(split_fractions))
    write_study_set(sim, cfg)
    return sim


def position_splits(n: int) -> list[str]:
    """train/val/test by position, 60/20/20, at least one val and one test study from n = 3 on
    (a five-study example must have all three splits to train and evaluate).

    >>> position_splits(5)
    ['train', 'train', 'train', 'val', 'test']
    """
    n_test = max(1, round(0.2 * n)) if n >= 3 else 0
    n_val = max(1, round(0.2 * n)) if n >= 3 else 0
    return ["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test


def user_files(sim: Path, root: Path, with_split: bool = True, reports: bool = True,
               views: bool = False, id_prefix: str = "ECHO-",
               by_position: bool = False) -> dict[str, Path]:
    """Copy a simulated set's DICOMs into one folder per study and write the labels (and
    optionally reports and views) files; the manifest's views, boxes, phases and reasoning are
    left behind. The split column is the manifest's (the same test studies as a run on the
    manifest), or with ``by_position`` :func:`position_splits`. Returns the paths written."""
    from echosonar.io.manifest import read_manifest

    _, records = read_manifest(sim)
    splits = position_splits(len(records)) if by_position else [r.split for r in records]
    root.mkdir(parents=True, exist_ok=True)
    studies = root / "studies"
    label_rows, report_rows, view_rows = [], [], []
    for i, rec in enumerate(records):
        sid = f"{id_prefix}{i + 1:04d}"
        folder = studies / sid
        folder.mkdir(parents=True, exist_ok=True)
        for c in rec.clips:
            shutil.copyfile(sim / c.path, folder / Path(c.path).name)
            view_rows.append([sid, Path(c.path).name, c.view])
        row = [sid] + [str(int(rec.labels[f.key])) for f in FINDINGS]
        label_rows.append(row + ([splits[i]] if with_split else []))
        report_rows.append({"study": sid, "report": rec.report})
    out = {"studies": studies, "labels": root / "labels.csv"}
    with open(out["labels"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["study"] + [f.key for f in FINDINGS] + (["split"] if with_split else []))
        w.writerows(label_rows)
    if reports:
        out["reports"] = root / "reports.jsonl"
        out["reports"].write_text("".join(json.dumps(r) + "\n" for r in report_rows))
    if views:
        out["views"] = root / "views.csv"
        with open(out["views"], "w", newline="") as f:
            csv.writer(f).writerows([["study", "file", "view"], *view_rows])
    return out


def build_example(root: Path, studies: int = 5, seed: int = 0, image_size: int = 48,
                  **kw: object) -> dict[str, Path]:
    """Simulate ``studies`` studies under ``root/sim`` and write the user's files beside them
    (splits by position: every split has a study)."""
    sim = simulate(root / "sim", studies, seed, image_size)
    return user_files(sim, root / "user", by_position=True, **kw)  # type: ignore[arg-type]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=5)
    p.add_argument("--out", required=True, help="folder for the user's files")
    p.add_argument("--sim", default=None, help="simulated set to convert (simulated if absent; "
                   "then the splits go by position, else they are the manifest's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--no-split", action="store_true", help="leave the split column out")
    p.add_argument("--views", action="store_true", help="also write views.csv")
    a = p.parse_args()
    sim = Path(a.sim) if a.sim else Path(a.out) / "sim"
    if not (sim / "manifest.json").is_file():
        simulate(sim, a.studies, a.seed, a.image_size)
    paths = user_files(sim, Path(a.out), with_split=not a.no_split, views=a.views,
                       by_position=a.sim is None)
    print(json.dumps({k: str(v) for k, v in paths.items()}))


if __name__ == "__main__":
    main()
