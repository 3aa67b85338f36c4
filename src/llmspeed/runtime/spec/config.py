"""What `--draft` asks for, parsed and validated once: `ngram[:k]` (prompt lookup) or a draft model directory."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_K = 8  # proposals per step at most (adaptive k lowers it per request)
MAX_K = 32
NGRAM_MAX = 3  # longest n-gram matched against the request's earlier text
NGRAM_MIN = 2  # shortest (1-grams match almost anywhere and mostly propose noise)


@dataclass(frozen=True)
class DraftConfig:
    """`kind` "ngram" (prompt lookup over the prompt and the generated text) or "model" (`path`: a draft model
    sharing the target's tokenizer). `k`: most tokens proposed per step; `adaptive`: lower k, and pause drafting,
    for a request whose proposals keep being rejected."""

    kind: str = "ngram"
    k: int = DEFAULT_K
    path: str = ""
    ngram_max: int = NGRAM_MAX
    ngram_min: int = NGRAM_MIN
    adaptive: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ("ngram", "model"):
            raise ValueError(f"draft kind must be ngram or model, got {self.kind!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= MAX_K:
            raise ValueError(f"draft k must be an integer in 1..{MAX_K}, got {self.k!r}")
        if self.kind == "model" and not self.path:
            raise ValueError("a draft model needs a path")
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError(f"need 1 <= ngram_min <= ngram_max, got {self.ngram_min}, {self.ngram_max}")

    @property
    def label(self) -> str:
        return f"ngram:{self.k}" if self.kind == "ngram" else f"{self.path}:{self.k}"


def parse_draft(spec: str | DraftConfig | None) -> DraftConfig | None:
    """`None`/"" / "none" -> no drafting; "ngram" / "ngram:K"; "DIR" or "DIR:K" (a draft model). ValueError with
    one clear line otherwise (the path itself is checked when the draft model is loaded)."""
    if spec is None or isinstance(spec, DraftConfig):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"--draft must be ngram[:k] or a model directory, got {spec!r}")
    s = spec.strip()
    if s.lower() in ("", "none", "off"):
        return None
    head, sep, tail = s.rpartition(":")
    if head.lower() == "ngram" or s.lower() == "ngram":
        if s.lower() == "ngram":
            return DraftConfig("ngram")
        return DraftConfig("ngram", _k(tail, s))
    if s.lower().startswith("ngram"):
        raise ValueError(f"bad --draft {spec!r}: use ngram or ngram:K with K in 1..{MAX_K}")
    if sep and tail.isdigit():  # DIR:K
        return DraftConfig("model", _k(tail, s), path=head)
    return DraftConfig("model", path=s)


def _k(text: str, spec: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise ValueError(f"bad --draft {spec!r}: k must be an integer in 1..{MAX_K}") from None
    if not 1 <= k <= MAX_K:
        raise ValueError(f"bad --draft {spec!r}: k must be in 1..{MAX_K}, got {k}")
    return k
