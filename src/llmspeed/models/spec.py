"""What a `--model` value means, parsed once and the same everywhere (generate, serve, replicas, Ray, bench).

- `default`: the embedded SmolLM2-135M-Instruct GGUF **as shipped**: its Q4_1 blocks kept as exact int4 codes
  (`int4-g32-asym` modules) and its tied Q8_0 embedding as exact int8 codes + block scales (`int8-head-g32`),
  i.e. `default:native`. `default:fp32` asks for the float32
  dequantization of the same weights (what Hugging Face's GGUF loader produces).
- `FILE.gguf`: as shipped when every Linear weight is Q4_0/Q4_1 (imported exactly), else the float32
  dequantization; `:native` / `:fp32` force either (`:native` re-rounds other block types to int4, logged).
- a Hugging Face model directory or a directory llmspeed saved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FORMS = ("native", "fp32")
EXACT_NATIVE = ("Q4_0", "Q4_1")


@dataclass(frozen=True)
class ModelSpec:
    text: str  # what the user wrote
    kind: str  # "default" | "gguf" | "dir"
    path: Path | None  # the .gguf file or the directory; None for `default` (found when resolved)
    form: str  # "native" | "fp32" for GGUF sources (resolved), "" for directories

    def __post_init__(self) -> None:
        if self.kind not in ("default", "gguf", "dir"):
            raise ValueError(f"unknown model kind {self.kind!r}")
        if (self.kind == "dir") != (self.form == ""):
            raise ValueError(f"form {self.form!r} does not fit a {self.kind} model")


def parse_model_spec(text: str | Path) -> ModelSpec:
    """Validate a `--model` value without loading weights: a missing path or unknown suffix is a clear error."""
    s = str(text).strip()
    base, sep, form = s.rpartition(":")
    if not sep or form not in FORMS or not base:
        base, form = s, ""
    if base == "default":
        return ModelSpec(s, "default", None, form or "native")
    p = Path(base).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"model not found: {base} (expected 'default', a model directory or a .gguf file)")
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise ValueError(f"unsupported model file {p.name}: pass a .gguf file or a model directory")
        return ModelSpec(s, "gguf", p, form or ("native" if _all_linears_q4(p) else "fp32"))
    if form:
        raise ValueError(f"':{form}' applies to 'default' or a .gguf file, not the directory {base!r}")
    return ModelSpec(s, "dir", p, "")


def _all_linears_q4(path: Path) -> bool:
    """Whether every Linear weight of the GGUF is a Q4_0/Q4_1 block type (so int4 codes import exactly)."""
    from llmspeed.models.gguf_file import _LAYER_MAP, open_gguf

    kinds = {t.tensor_type.name for t in open_gguf(path).tensors
             if t.name.startswith("blk.") and t.name.split(".", 2)[2] in _LAYER_MAP
             and _LAYER_MAP[t.name.split(".", 2)[2]].endswith("_proj.weight")}
    return bool(kinds) and kinds <= set(EXACT_NATIVE)


def model_dir(spec: ModelSpec) -> Path:
    """The directory to read: a GGUF source is converted once into the cache (native or fp32 form)."""
    from llmspeed.models.default_model import converted_gguf_dir, default_gguf_path

    if spec.kind == "dir":
        assert spec.path is not None
        return spec.path
    gguf = default_gguf_path() if spec.kind == "default" else spec.path
    assert gguf is not None
    return converted_gguf_dir(gguf, native=spec.form == "native")


def float_source(text: str | Path) -> str:
    """The `--model` value to compress from: a GGUF taken as shipped is read in its float32 form (its Linears are
    int4 already and recipe steps act on float weights); an explicit `:native` keeps the blocks."""
    s = str(text)
    ms = parse_model_spec(s)
    return f"{s}:fp32" if ms.kind != "dir" and ms.form == "native" and not s.endswith(":native") else s


def describe(text: str | Path) -> str:
    """One line saying what a `--model` value is (README, `/v1/models`)."""
    ms = parse_model_spec(text)
    what = "the embedded SmolLM2-135M-Instruct GGUF" if ms.kind == "default" else f"GGUF {ms.path}"
    if ms.kind == "dir":
        return f"model directory {ms.path}"
    if ms.form == "native":
        return f"{what} as shipped: Q4_0/Q4_1 blocks kept as exact int4-g32-asym codes, a Q8_0 head as int8 codes"
    return f"{what} dequantized to float32"
