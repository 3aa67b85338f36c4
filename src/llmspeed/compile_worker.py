"""A child process that compiles one decode-graph bucket for a parent that keeps serving (runtime/aot_builds.py).

    python -m llmspeed.compile_worker SPEC.json

SPEC: {"load": llmspeed.load's arguments, "compile": CompileConfig's fields, "inputs"/"state": the bucket's shapes
(`aot_builds.bucket_spec`), "root": the package cache, "result": where to write {"path": package}, "parent": pid}.
The child rebuilds the model exactly as the parent's `llmspeed.load` did, exports the same bucket and compiles it
at nice 10 into the shared cache; the parent then checks the package is the one its own export names.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MODULE = "llmspeed.compile_worker"


def worker_for(llm: Any) -> dict[str, Any] | None:
    """How a compile child rebuilds `llm`'s model: its load arguments while it is unchanged since `llmspeed.load`
    (on the CPU, one process); None otherwise (the build then runs in a thread of this process)."""
    args = getattr(llm, "load_args", None)
    if args is None or llm.tp is not None or llm.device.type != "cpu":
        return None
    return {"module": MODULE, "load": {**args, "prefill": llm.options.prefill}}


def _watch_parent(parent: int) -> None:
    def loop() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(3)  # the server is gone: its compile is no longer wanted

    threading.Thread(target=loop, daemon=True, name="compile-parent-watch").start()


def run(spec: dict[str, Any]) -> Path:
    """Export + compile the bucket described by `spec`; returns the package path."""
    import torch

    import llmspeed
    from llmspeed.runtime import aot
    from llmspeed.runtime.aot_builds import bucket_tensors
    from llmspeed.runtime.compiled import CompileConfig, _forward_aot, reuse_or_build

    torch.set_num_threads(1)  # export is single-threaded work; the C++ compiler gets the rest
    llm = llmspeed.load(**spec["load"])
    cfg = CompileConfig(**{**spec["compile"], "background": False})
    step = reuse_or_build(llm.model, cfg, None)  # the same preparation as the parent's engine
    inputs, state = bucket_tensors(spec)
    what = step._what(tuple(inputs))
    ep, path = aot.export_and_locate(llm.model, _forward_aot, inputs, state, Path(spec["root"]), step._options(),
                                     what)
    if not path.exists():
        aot.compile_package(ep, path, step._options(), what)
    return path


def main(argv: list[str] | None = None) -> int:
    from llmspeed.runtime.aot_builds import lower_priority

    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    lower_priority()
    if spec.get("parent"):
        _watch_parent(int(spec["parent"]))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("llmspeed.progress", "llmspeed.runtime.aot"):  # the compile's progress lines, on the server's stderr
        logging.getLogger(name).setLevel(logging.INFO)
    path = run(spec)
    Path(spec["result"]).write_text(json.dumps({"path": str(path)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
