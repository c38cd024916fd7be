"""Tokenizer: round trips, special tokens, box-citation digits, save/load."""

import pytest

from echosonar.reason.synthetic import synthetic_studies
from echosonar.reason.tokenizer import (
    CLIP,
    SPECIAL_TOKENS,
    STRUCT,
    TAG_TOKENS,
    TokenizerError,
    corpus_from_studies,
    load_tokenizer,
    train_tokenizer,
)
from echosonar.textformat import box_to_text, target_text


@pytest.fixture(scope="module")
def studies():
    return synthetic_studies(12, seed=3)


@pytest.fixture(scope="module")
def tok(studies):
    return train_tokenizer(corpus_from_studies(studies), vocab_size=400)


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_round_trip_targets_and_prompt_text(tok, studies):
    for sf in studies[:4]:
        t = target_text(sf.reasoning, sf.labels, sf.report)
        ids = _ids(tok, t)
        assert tok.decode(ids) == t
        assert tok.decode(ids, skip_special_tokens=True) == t  # tags are not "special"
    odd = "Ünïcode → 12.5 cm; EF 7% <think>x</think>\n\ttab"
    assert tok.decode(_ids(tok, odd)) == odd  # byte level: nothing is lost


def test_special_tokens_are_single_ids_and_skippable(tok):
    assert len(tok) <= 400
    for t in SPECIAL_TOKENS + TAG_TOKENS:
        assert len(_ids(tok, t)) == 1, t
    assert tok.eos_token_id is not None and tok.pad_token_id is not None
    assert len({tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS + TAG_TOKENS}) == 10
    ids = _ids(tok, f"<s><think>{CLIP}{STRUCT}a</think></s><pad>")
    assert tok.decode(ids, skip_special_tokens=True) == "<think>a</think>"


def test_box_digits_tokenise_one_number_per_token(tok):
    assert all(len(_ids(tok, str(i))) == 1 for i in range(100))
    for box in ([0.0, 0.0, 0.0, 0.0], [0.31, 0.1, 0.63, 0.57], [0.05, 0.5, 0.999, 0.99]):
        text = box_to_text(box)
        pieces = tok.convert_ids_to_tokens(_ids(tok, text))
        assert len(pieces) == 9, pieces  # ( n , n , n , n )
        assert tok.decode(_ids(tok, text)) == text
    # the same coordinate is the same token in a citation and in the prompt's box line
    assert _ids(tok, "LV (31,10,63,57)")[-8:] == _ids(tok, "boxes: LV (31,10,63,57)")[-8:]
    assert len(_ids(tok, "123")) == 2  # longer numbers split into <= 2-digit groups


def test_save_load_and_errors(tok, tmp_path):
    tok.save_pretrained(str(tmp_path / "t"))
    assert (tmp_path / "t" / "tokenizer.json").is_file()
    tok2 = load_tokenizer(tmp_path / "t")
    text = "view A4C: structures LV (31,10,63,57). <answer>"
    assert _ids(tok2, text) == _ids(tok, text)
    assert tok2.eos_token_id == tok.eos_token_id and tok2.padding_side == "left"
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(TokenizerError, match="too small"):
        train_tokenizer(["abc"], vocab_size=300)
