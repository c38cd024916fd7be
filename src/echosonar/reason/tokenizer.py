"""Byte-level BPE tokenizer for EchoSonar-R, trained with the ``tokenizers`` library.

Vocabulary = 256 byte symbols + special tokens + BPE merges learned on the project's
reasoning/report corpus (and the prompt-side text: view names, box and measurement lines).

Special tokens:

- ``<s>`` (bos), ``</s>`` (eos), ``<pad>`` (pad) — special: ``decode(skip_special_tokens=True)``
  drops them.
- ``<clip>``, ``<struct>`` — vision placeholders: one per clip token / structure token in the
  prompt; their embedding rows are overwritten by the projected features (LLaVA style), so they
  never reach the LM as text. Special.
- ``<gen>`` — the prompt's last token. Without it the prompt ended in a newline, and the first
  completion token (``<think>``) had to be told apart from the many "newline -> view" steps of
  the reasoning; a tiny model got that wrong for a long time. Special.
- ``<think>``, ``</think>``, ``<answer>``, ``</answer>`` — ordinary added tokens (one id each), so
  decoding with ``skip_special_tokens=True`` keeps them and the strict parser sees them.

Numbers: digits are pre-split into runs of at most two (``\\d{1,2}``) and the corpus is padded with
every integer 0..99, so each box-citation coordinate (0..99 grid, :func:`textformat.box_to_text`)
is exactly one token: ``(31,10,63,57)`` -> ``( 31 , 10 , 63 , 57 )`` = 9 tokens whatever the
values. Longer numbers split into two-digit groups from the left (``123`` -> ``12`` ``3``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
CLIP, STRUCT = "<clip>", "<struct>"
#: Last prompt token, right before the completion (like a chat template's assistant marker).
GEN = "<gen>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, CLIP, STRUCT, GEN)
TAG_TOKENS: tuple[str, ...] = ("<think>", "</think>", "<answer>", "</answer>")


class TokenizerError(ValueError):
    """A tokenizer file is missing or lacks the EchoSonar special tokens."""


def _number_lines() -> list[str]:
    # Every 0..99 integer many times, so BPE learns all two-digit merges (box coordinates).
    nums = " ".join(str(i) for i in range(100))
    box = " ".join(f"({i},{(i * 7) % 100},{(i * 13) % 100},{(i * 31) % 100})" for i in range(100))
    return [nums, box] * 20


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 2048, min_frequency: int = 2) -> "PreTrainedTokenizerFast":  # noqa: F821,E501
    """Train a byte-level BPE tokenizer on ``corpus`` (an iterable of documents).

    Returns a ``transformers.PreTrainedTokenizerFast`` with bos/eos/pad set. The vocabulary is at
    most ``vocab_size`` (smaller if the corpus has fewer merges to learn).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\d{1,2}"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    n_fixed = 256 + len(SPECIAL_TOKENS) + len(TAG_TOKENS)
    if vocab_size < n_fixed + 100:
        raise TokenizerError(f"vocab_size {vocab_size} is too small: need > {n_fixed + 100} "
                             "(bytes, special tokens and the 0..99 numbers)")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(TAG_TOKENS), min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False)
    docs = [d for d in corpus if d] + _number_lines()
    tok.train_from_iterator(docs, trainer=trainer)
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok) -> "PreTrainedTokenizerFast":  # noqa: F821
    """Wrap a ``tokenizers.Tokenizer`` as a HF fast tokenizer and add the EchoSonar tokens."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                 pad_token=PAD, padding_side="left")
    add_echosonar_tokens(hf)
    return hf


def add_echosonar_tokens(hf) -> int:
    """Add the vision placeholders (special) and the four tags (ordinary) to any HF tokenizer
    (also a pretrained base model's), and a pad token if it has none. Returns how many tokens
    were new."""
    from tokenizers import AddedToken

    before = len(hf)
    hf.add_special_tokens({"additional_special_tokens": [CLIP, STRUCT, GEN]},
                          replace_extra_special_tokens=False)
    hf.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    if hf.pad_token_id is None:
        hf.add_special_tokens({"pad_token": PAD})
    if hf.eos_token_id is None:
        hf.add_special_tokens({"eos_token": EOS})
    hf.padding_side = "left"
    return len(hf) - before


def load_tokenizer(directory: str | Path) -> "PreTrainedTokenizerFast":  # noqa: F821
    """Load a tokenizer saved by ``save_pretrained`` (``tokenizer.json``) and check its tokens."""
    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    if not (directory / "tokenizer.json").is_file():
        raise TokenizerError(f"no tokenizer.json in {directory}")
    hf = PreTrainedTokenizerFast.from_pretrained(str(directory), padding_side="left")
    check_tokenizer(hf, str(directory))
    return hf


def check_tokenizer(hf, where: str = "tokenizer") -> None:
    """Raise :class:`TokenizerError` unless every EchoSonar token is a single id."""
    vocab = hf.get_vocab()
    missing = [t for t in (CLIP, STRUCT, GEN, *TAG_TOKENS) if t not in vocab]
    if missing or hf.eos_token_id is None or hf.pad_token_id is None:
        raise TokenizerError(f"{where} lacks EchoSonar tokens {missing or ['eos/pad']}; "
                             "build it with train_tokenizer or add_echosonar_tokens")


def corpus_from_studies(studies: Iterable, writer: str = "reference", flags: bool = False,
                        report: str = "reference") -> list[str]:
    """Training documents: every study's SFT target (the cache's reference text, and the
    ``writer``'s when that is another, see ``reason.data.sft_target``) and the prompt-side
    text of its views.

    ``studies`` are ``schema.StudyFeatures`` (``reasoning``/``labels``/``report`` set).
    """
    from echosonar.reason.data import sft_target
    from echosonar.reason.prompt import view_text

    docs: list[str] = []
    for sf in studies:
        for w in dict.fromkeys(("reference", writer)):
            try:
                docs.append(sft_target(sf, w, flags, report))
            except ValueError:  # a study without that target contributes its prompt text only
                pass
        for v in sf.views:
            docs.append(view_text(v, use_structure_tokens=True, flags=True))  # flags: a superset
    return docs
