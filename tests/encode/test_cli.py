"""End to end through the command line on a tiny ingest cache (written with ingest.write_cache)."""

import json

from echosonar.cli import main
from echosonar.ingest import write_cache
from echosonar.io.features import read_index

from .helpers import make_studies

TINY = ["--set", "encode.model.dim=16", "--set", "encode.model.depth=1",
        "--set", "encode.model.heads=2", "--set", "encode.model.image_size=32",
        "--set", "encode.model.clip_len=8", "--set", "encode.model.tubelet=2,8,8", "--set", "encode.pretrain.threads=1"]


def test_train_encode_baselines_cli(tmp_path, capsys):
    cache = tmp_path / "cache"
    write_cache(make_studies(30), cache)
    enc = tmp_path / "enc"
    assert main(["train", "encoder", "--cache", str(cache), "--out", str(enc), "--epochs", "1",
                 *TINY]) == 0
    assert (enc / "model.safetensors").is_file() and (enc / "run_info.json").is_file()
    feats = tmp_path / "feats"
    assert main(["encode", str(cache), "--out", str(feats), "--encoder", str(enc), *TINY]) == 0
    idx = read_index(feats)
    assert len(idx["studies"]) == 30 and idx["encoder"]["dim"] == 16
    assert idx["detector"]["used"] is False
    # rerun = resume: nothing rewritten
    assert main(["encode", str(cache), "--out", str(feats), "--encoder", str(enc)]) == 0
    assert "0 studies written, 30 already present" in capsys.readouterr().err
    out = tmp_path / "base"
    assert main(["train", "baselines", "--cache", str(feats), "--out", str(out),
                 "--set", "encode.baselines.epochs=2", "--set", "encode.baselines.threads=1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"prior", "single_view", "late_fusion",
                                       "attention_fusion", "attention_fusion_evidence"}
    assert main(["train", "baselines", "--cache", str(cache), "--out", str(tmp_path / "x")]) == 2
    assert "pass --encoder" in capsys.readouterr().err
    assert main(["encode", str(tmp_path / "nope"), "--out", str(feats), "--encoder",
                 str(enc)]) == 2
