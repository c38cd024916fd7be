"""Child process for the batch kill-and-resume test: ``python batch_child.py OUT STUDIES``.

Runs :func:`echosonar.app.analyze_cli.run_batch` over the sub-folders of STUDIES with the fake
stages of ``conftest.py`` (no models), pausing briefly after each study so that the parent can
SIGKILL it between *and* inside studies' writes.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path


def _conftest():
    """tests/app/conftest.py, loaded by path (this file also runs as a plain script)."""
    spec = importlib.util.spec_from_file_location("app_conftest", Path(__file__).with_name(
        "conftest.py"))
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    return conftest


def make_studies(root: Path) -> Path:
    """Nine inputs: 01..06 distinct studies, 07 and 08 copies of 02's files (same study key),
    09 junk. Folder names carry a patient name, as real exports do."""
    root.mkdir()
    for i in range(1, 7):
        d = root / f"{i:02d}_DOE_JANE"
        d.mkdir()
        for v in ("A4C", "PLAX"):
            _conftest().fake_dicom(d / f"{v}.dcm", v, salt=str(i))
    for i in (7, 8):
        d = root / f"{i:02d}_DOE_JANE"
        d.mkdir()
        for v in ("A4C", "PLAX"):
            _conftest().fake_dicom(d / f"{v}.dcm", v, salt="2")
    (root / "09_DOE_JANE").mkdir()
    (root / "09_DOE_JANE" / "x.dcm").write_bytes(b"junk" * 50)
    return root


def fakes() -> tuple[object, object]:
    """``(stages, bundle)`` as the app tests' fixtures build them."""
    from echosonar.app.bundle import Bundle, BundleSpec
    from echosonar.taxonomy import LABEL_KEYS

    conftest = _conftest()
    bspec = BundleSpec(Path("fake-bundle"), {}, {k: 0.5 for k in LABEL_KEYS}, "bundle", 256)
    bundle = Bundle(bspec, "vc", "det", "enc", "vlm",
                    {n: {"kind": n, "sha256": "0" * 64} for n in ("detector", "encoder", "vlm")})
    return conftest.make_fake_stages(), bundle


def main(out: str, studies: str, pause_s: float = 0.05) -> int:
    from echosonar.app.analyze_cli import batch_inputs, run_batch
    from echosonar.app.pipeline import analyze_study
    from echosonar.config import load_config

    stages, bundle = fakes()

    def analyze(paths, bundle, cfg):  # noqa: ANN001, ANN202
        res = analyze_study(paths, bundle, cfg, stages=stages)
        time.sleep(pause_s)  # leaves the parent a window inside this study's work
        return res

    return run_batch(batch_inputs([Path(studies)]), bundle, load_config(), Path(out), True,
                     analyze=analyze)


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
