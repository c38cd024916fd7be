import subprocess
import sys

from echosonar import taxonomy as tx
from echosonar.cli import COMMANDS, main


def test_help_lists_every_stage(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for words in ("simulate", "ingest", "detect", "encode", "train sft", "train grpo",
                  "evaluate", "analyze", "serve", "quickstart"):
        assert words in out


def test_every_command_module_has_help(capsys):
    import importlib

    for _, module, _ in COMMANDS:
        mod = importlib.import_module(module)
        assert callable(mod.add_arguments) and callable(mod.run)


def test_unknown_command_fails(capsys):
    assert main(["frobnicate"]) == 2


def test_import_is_light():
    code = "import sys, echosonar, echosonar.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_taxonomy_is_consistent():
    assert len(tx.LABELS) == 14 and tx.LABEL_KEYS[-1] == "healthy"
    assert len(set(tx.LABEL_KEYS)) == len(tx.LABEL_KEYS)
    for f in tx.FINDINGS:
        assert f.views and set(f.views) <= set(tx.VIEWS), f.key
        assert set(f.structures) <= set(tx.STRUCTURES), f.key
        assert f.section in tx.REPORT_SECTIONS
    for view, structs in tx.VIEW_STRUCTURES.items():
        assert view in tx.VIEWS and set(structs) <= set(tx.STRUCTURES)
    # every finding is visible in at least one view, no view shows every finding
    masks = [tx.visible_label_mask(v) for v in tx.VIEWS]
    assert all(any(m[i] for m in masks) for i in range(len(tx.FINDINGS)))
    assert all(sum(m) < len(tx.FINDINGS) for m in masks)
