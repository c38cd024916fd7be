"""The shipped model (``models/echosonar-r``): checksums verified, float16 on disk, float32 loaded,
refused when tampered with, found by ``analyze`` without ``--model``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from echosonar.app.bundle import (
    BUNDLE_FILE,
    CHECKSUMS_FILE,
    SHIP_LIMIT_MB,
    BundleError,
    bundle_size_mb,
    default_model_dir,
    load_bundle,
    read_bundle_spec,
    read_checksums,
    ship_bundle,
    verify_checksums,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "echosonar-r"


@pytest.fixture(scope="module")
def shipped() -> Path:
    if not SHIPPED.is_dir():
        pytest.fail(f"the shipped model is missing: {SHIPPED}")
    return SHIPPED


def test_default_model_is_the_shipped_one(shipped, monkeypatch):
    monkeypatch.delenv("ECHOSONAR_MODEL", raising=False)
    assert default_model_dir() == shipped
    monkeypatch.setenv("ECHOSONAR_MODEL", "/elsewhere/bundle")
    assert default_model_dir() == Path("/elsewhere/bundle")


def test_one_copy_small_and_safetensors_only(shipped):
    bundles = [p for p in (REPO / "models").rglob(BUNDLE_FILE)]
    assert bundles == [shipped / BUNDLE_FILE], "exactly one shipped bundle in the tree"
    assert bundle_size_mb(shipped) <= SHIP_LIMIT_MB
    suffixes = {p.suffix for p in shipped.rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".safetensors", ".md", ".sha256"}, suffixes
    assert not list(shipped.rglob("training_state*")), "no optimizer/training state shipped"


def test_checksums_cover_every_file_and_verify(shipped):
    listed = read_checksums(shipped)
    on_disk = {p.relative_to(shipped).as_posix() for p in shipped.rglob("*")
               if p.is_file() and p.name != CHECKSUMS_FILE}
    assert set(listed) == on_disk
    assert verify_checksums(shipped) == len(on_disk)
    data = json.loads((shipped / BUNDLE_FILE).read_text())
    assert data["checksums"] == CHECKSUMS_FILE and data["weights_dtype"] == "float16"
    assert (shipped / "MODEL_CARD.md").is_file()


def test_weights_half_on_disk_float32_loaded(shipped):
    import torch
    from safetensors import safe_open

    for comp in ("view_classifier", "detector", "encoder", "vlm"):
        with safe_open(str(shipped / comp / "model.safetensors"), framework="pt") as f:
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        assert "F32" not in dtypes and "F16" in dtypes, (comp, dtypes)
    b = load_bundle(shipped)
    assert b.spec.thresholds_source == "bundle"
    for comp in ("view_classifier", "detector", "encoder", "vlm"):
        floats = {p.dtype for p in getattr(b, comp).parameters() if p.is_floating_point()}
        assert floats == {torch.float32}, (comp, floats)


def _copy(shipped: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(shipped, dest)
    return dest


def test_tampered_weights_are_refused_naming_the_file(shipped, tmp_path):
    b = _copy(shipped, tmp_path)
    w = b / "vlm" / "model.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-1] ^= 0x01
    w.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=r"vlm/model\.safetensors does not match its SHA-256"):
        read_bundle_spec(b)
    with pytest.raises(BundleError, match=r"vlm/model\.safetensors"):
        load_bundle(b)


@pytest.mark.parametrize("damage, match", [
    (lambda b: (b / "detector" / "config.json").unlink(), r"detector/config\.json is listed"),
    (lambda b: (b / "encoder" / "extra.bin").write_bytes(b"x"), r"encoder/extra\.bin is not listed"),
    (lambda b: (b / CHECKSUMS_FILE).unlink(), r"CHECKSUMS\.sha256 is missing"),
    (lambda b: (b / CHECKSUMS_FILE).write_text("nonsense\n"), "line 1 is not"),
    (lambda b: (b / BUNDLE_FILE).write_text((b / BUNDLE_FILE).read_text() + " "),
     r"bundle\.json does not match"),
])
def test_other_damage_is_refused(shipped, tmp_path, damage, match):
    b = _copy(shipped, tmp_path)
    damage(b)
    with pytest.raises(BundleError, match=match):
        read_bundle_spec(b)


def test_ship_roundtrip_keeps_the_card(shipped, tmp_path):
    out = tmp_path / "reshipped"
    out.mkdir()
    (out / "MODEL_CARD.md").write_text("card\n")
    (out / "stale.txt").write_text("from an older ship\n")
    spec = read_bundle_spec(shipped)
    ship_bundle(out, dict(spec.components), spec.thresholds, spec.max_new_tokens,
                provenance={"note": "test"})
    assert (out / "MODEL_CARD.md").read_text() == "card\n" and not (out / "stale.txt").exists()
    assert verify_checksums(out) == len(read_checksums(out))
    again = read_bundle_spec(out)
    assert again.thresholds == spec.thresholds and again.meta["weights_dtype"] == "float16"
    with pytest.raises(BundleError, match="over the 0.001 MB limit"):
        ship_bundle(tmp_path / "big", dict(spec.components), None, 8, limit_mb=0.001)
    assert not (tmp_path / "big").exists()


def test_bundle_cli_verify_and_rehash(shipped, tmp_path, capsys):
    from echosonar.cli import main

    assert main(["bundle", "--verify", str(shipped)]) == 0
    b = _copy(shipped, tmp_path)
    (b / "MODEL_CARD.md").write_text("edited card\n")
    assert main(["bundle", "--verify", str(b)]) == 1
    assert "MODEL_CARD.md does not match" in capsys.readouterr().err
    assert main(["bundle", "--rehash", str(b)]) == 0
    assert main(["bundle", "--verify", str(b)]) == 0


def test_analyze_without_model_names_the_missing_default(tmp_path, monkeypatch, capsys):
    from echosonar.cli import main

    monkeypatch.setenv("ECHOSONAR_MODEL", str(tmp_path / "no-such-bundle"))
    study = tmp_path / "study"
    study.mkdir()
    (study / "a.dcm").write_bytes(b"x")
    assert main(["analyze", str(study), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "shipped model is not at" in err and "--model BUNDLE" in err


def test_reship_one_part_keeps_thresholds_provenance_and_weights(shipped, tmp_path):
    """Swapping one component (here: the same view classifier) from the shipped bundle itself:
    thresholds, provenance and each component's origin survive; fp16 weights are unchanged."""
    from echosonar.cli import main

    out = tmp_path / "reshipped"
    parts = {c: str(shipped / c) for c in ("view_classifier", "detector", "encoder", "vlm")}
    assert main(["bundle", "--ship", "--out", str(out), "--view-classifier",
                 parts["view_classifier"], "--detector", parts["detector"], "--encoder",
                 parts["encoder"], "--vlm", parts["vlm"], "--thresholds-from", str(shipped),
                 "--provenance", "note=re-shipped"]) == 0
    old, new = read_bundle_spec(shipped), read_bundle_spec(out)
    assert new.thresholds == old.thresholds and new.max_new_tokens == old.max_new_tokens
    prov_old, prov_new = old.meta["provenance"], new.meta["provenance"]
    assert prov_new["recipe"] == prov_old["recipe"] and prov_new["note"] == "re-shipped"
    for c in parts:
        assert (read_checksums(out)[f"{c}/model.safetensors"]
                == read_checksums(shipped)[f"{c}/model.safetensors"])
        assert (prov_new["components_shipped"][c]["run_info"]
                == prov_old["components_shipped"][c]["run_info"])
    with pytest.raises(SystemExit, match="--thresholds-from.*not found"):
        main(["bundle", "--ship", "--out", str(tmp_path / "x"), "--view-classifier",
              parts["view_classifier"], "--detector", parts["detector"], "--encoder",
              parts["encoder"], "--vlm", parts["vlm"], "--thresholds-from",
              str(tmp_path / "none")])
    assert not (tmp_path / "x").exists()
