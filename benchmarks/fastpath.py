"""Issue 13's quality target: top-1 agreement of the fast path with the reference on >= 2,000 tokens.

The fast path is the engine (prefill + decode steps: fused projections, llmspeed's kernels, the compiled graph,
the measured prefill path); the reference is the same recipe's weights computed unfused, uncompiled, in float32
(llmspeed/evaluation/fastpath.py). Text: held-out Shakespeare plays (never used for calibration).

    python benchmarks/fastpath.py --model out/speed            # a saved recipe
    python benchmarks/fastpath.py --recipe speed               # compress the default model in memory first
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--recipe", default="")
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=250)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--against", default="", help="compare with this model's plain forward instead (e.g. default)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import llmspeed
    from llmspeed.data.texts import eval_plays
    from llmspeed.evaluation.fastpath import fast_path_agreement
    from llmspeed.llm import compress_

    llm = llmspeed.load(args.model, threads=args.threads)
    if args.recipe:
        compress_(llm, args.recipe)
    tokens = llm.tokenizer.encode(eval_plays().text[:400_000])
    t0 = time.perf_counter()
    original = llmspeed.load(args.against, threads=args.threads) if args.against else None
    res = fast_path_agreement(llm, tokens, args.windows, args.prompt_len, args.new_tokens, original=original)
    res.update(model=args.model, recipe=llm.recipe, reference=args.against or "same recipe, plain torch",
               seconds=round(time.perf_counter() - t0, 1))
    sys.stdout.write(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
