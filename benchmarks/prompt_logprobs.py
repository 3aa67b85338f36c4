"""Cost of a prompt-logprob request (lm-eval's loglikelihood request: echo, logprobs=1, max_tokens=1) vs a plain
prefill of the same prompt (max_tokens=1), on the same engine, interleaved in one run. Target: <= 1.2x.

    python benchmarks/prompt_logprobs.py [--model default] [--prompt-len 128 512] [--repeats 7] [--clock cpu]

Three figures per prompt length: the plain prefill, the prefill that also scores every prompt position (lm_head
over all positions + log_softmax + top-1), and that plus the server's formatting of OpenAI's legacy logprobs
(token strings, offsets, top dicts). The prefix cache is off, so every run computes the whole prompt.
`--clock cpu` (the default) times the process's CPU seconds on `--threads 1`: on a machine shared with other
work, wall time mostly measures the neighbours; CPU time is the request's own cost. `--clock wall` for a quiet one.
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import print_table, shakespeare_ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--prompt-len", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--top", type=int, default=1, help="top alternatives per position (lm-eval asks for 1)")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    import llmspeed
    from llmspeed.runtime.sequence import SamplingParams
    from llmspeed.serving.logprobs import LegacyLogprobs

    llm = llmspeed.load(args.model, threads=args.threads)
    llm.reset_engine(enable_prefix_cache=False, kv_cache_tokens=max(args.prompt_len) + 256)
    eng = llm.engine
    plain = SamplingParams(max_new_tokens=1)
    scored = SamplingParams(max_new_tokens=1, logprobs=args.top, prompt_logprobs=args.top)

    def run(ids: list[int], params: SamplingParams, fmt: bool = False) -> float:
        t0 = clock()
        seq = eng.make_sequence(ids, params)
        eng.run_until_done([seq])
        if fmt:
            LegacyLogprobs(llm.tokenizer, 0, skip_special_tokens=False).add(seq.prompt_ids, seq.prompt_logprobs,
                                                                             final=True)
        return clock() - t0

    rows = []
    for n in args.prompt_len:
        ids = shakespeare_ids(llm.tokenizer, n)
        for _ in range(2):  # warm-up
            run(ids, plain), run(ids, scored, True)
        t_plain, t_scored, t_fmt = [], [], []
        for _ in range(args.repeats):  # interleaved: machine load drifts alike for all three
            t_plain.append(run(ids, plain))
            t_scored.append(run(ids, scored))
            t_fmt.append(run(ids, scored, True))
        p, s, f = (statistics.median(t) for t in (t_plain, t_scored, t_fmt))
        spread = max(t_plain) - min(t_plain)
        rows.append([str(n), f"{p * 1e3:.1f} ± {spread * 1e3:.1f}", f"{s * 1e3:.1f}", f"{s / p:.2f}x",
                     f"{f * 1e3:.1f}", f"{f / p:.2f}x"])
    print_table(f"prompt-logprob request vs plain prefill ({args.model}, top {args.top}, {args.clock} time, "
                f"{args.threads} thread(s), median of {args.repeats})",
                ["prompt tokens", "plain prefill ms", "+ prompt logprobs ms", "ratio", "+ legacy format ms",
                 "ratio"], rows)


if __name__ == "__main__":
    main()
