import pytest

from echosonar.config import (
    ConfigError,
    EchoSonarConfig,
    apply_overrides,
    describe,
    from_dict,
    load_config,
    save_yaml,
    to_dict,
)


def test_defaults_have_help_on_every_field():
    rows = describe(EchoSonarConfig)
    assert len(rows) > 20
    assert all(help_text for _, _, help_text in rows), [n for n, _, h in rows if not h]


def test_yaml_partial_load_and_override(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("sft:\n  lr: 0.01\n  steps: 7\nsim:\n  preset: shifted\n")
    cfg = load_config(p, ["sft.lr=3e-4", "grpo.beta=0.04", "sim.split_fractions=0.5,0.5,0"])
    assert cfg.sft.lr == pytest.approx(3e-4)
    assert cfg.sft.steps == 7
    assert cfg.grpo.beta == pytest.approx(0.04)
    assert cfg.sim.preset == "shifted"
    assert cfg.sim.split_fractions == [0.5, 0.5, 0.0]
    assert cfg.detect.lr == EchoSonarConfig().detect.lr  # untouched sections keep defaults


def test_round_trip(tmp_path):
    cfg = apply_overrides(EchoSonarConfig(), ["lm.layers=2", "lm.base_model=/x/y"])
    save_yaml(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert to_dict(again) == to_dict(cfg)
    assert from_dict(EchoSonarConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize("override", ["sft.nope=1", "nosection.lr=1", "sft.lr=abc", "sft.lr",
                                      "sft.steps=1.5", "lm.use_structure_tokens=maybe"])
def test_bad_overrides_are_clear_errors(override):
    with pytest.raises(ConfigError):
        load_config(None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft: [1, 2\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("sft:\n  learning_rate: 1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(unknown)
