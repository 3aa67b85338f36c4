"""Data-parallel launch of the distillation loop: torchrun ranks (gloo on CPU, nccl on CUDA) and Ray Train workers.

Both run `run.run_rank` on a prepared run directory: `python -m torch.distributed.run --nproc-per-node N -m
llmspeed.compress.distill.parallel RUN_JSON` (what `llmspeed distill --workers N` starts), or
`ray.train.torch.TorchTrainer` with `ScalingConfig(num_workers=N)`, whose workers Ray connects into one
torch.distributed group before calling `ray_worker`. Every rank reads the same run.json, data and initial
student, so for more than one machine the checkpoint directory must be on storage all of them see.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def torchrun_env() -> tuple[int, int] | None:
    """(rank, world size) when this process was started by torchrun with more than one rank, else None."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else None


def init_process_group() -> bool:
    """Join the torchrun group (gloo on CPU, nccl when CUDA is present); False when not under torchrun."""
    if torchrun_env() is None or (dist.is_available() and dist.is_initialized()):
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    return True


def share_threads(world: int) -> None:
    """Each of `world` local ranks gets its share of the cores (torch would otherwise start one thread per core each)."""
    if world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))


def launch_torchrun(spec_path: Path, workers: int, timeout: float | None = None) -> None:
    """Run the prepared run with `workers` local ranks under torch.distributed.run; raise if a rank fails.

    `--standalone` rendezvous on localhost; gloo's own connections use the loopback interface unless the caller
    chose one (GLOO_SOCKET_IFNAME)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={workers}",
           "-m", "llmspeed.compress.distill.parallel", str(spec_path)]
    env = {"GLOO_SOCKET_IFNAME": "lo"} | os.environ | {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers))}
    log.info("%s", " ".join(cmd))
    rc = subprocess.run(cmd, env=env, timeout=timeout, check=False).returncode
    if rc != 0:
        raise RuntimeError(f"distillation workers failed (torchrun exit code {rc}); the run can be continued "
                           "with --resume from its last checkpoint")


def ray_worker(config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: Ray has already joined the workers into one torch.distributed group."""
    from llmspeed.compress.distill.run import run_rank

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if config.get("loopback") and not os.environ.get("MASTER_ADDR", "127.").startswith("127."):
        raise RuntimeError(f"local Ray Train rendezvous is not on loopback: MASTER_ADDR={os.environ['MASTER_ADDR']}")
    share_threads(1)
    res = run_rank(Path(config["spec"]))
    try:
        import ray.train

        ray.train.report({"step": res.step, "final_loss": res.final_loss or 0.0, "tokens": res.tokens})
    except Exception as e:  # reporting is informative only: the student is already on disk
        log.warning("ray.train.report failed: %s", e)


def launch_ray(spec_path: Path, workers: int, address: str | None = None) -> None:
    """Run the prepared run as a Ray Train job of `workers` CPU workers.

    Without `address` (or RAY_ADDRESS) a local Ray is started on loopback only; with one, the job joins
    that cluster (then the checkpoint directory must be shared storage).
    """
    try:
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError as e:
        raise ValueError(f"--backend ray needs Ray Train: pip install 'ray[train]' ({e})") from None
    started = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address)
        else:
            # a local job must stay on loopback: ray_worker refuses a rendezvous elsewhere (Ray Train 2.60's workers
            # may pick the host's routable address for MASTER_ADDR despite _node_ip_address)
            ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1")
        started = True
    try:
        storage = (Path(spec_path).parent / "ray").resolve()
        loopback = started and not address
        trainer = TorchTrainer(ray_worker, train_loop_config={"spec": str(Path(spec_path).resolve()), "loopback": loopback},
                               scaling_config=ScalingConfig(num_workers=workers, use_gpu=False),
                               run_config=RunConfig(storage_path=str(storage), name="distill"))
        trainer.fit()
    finally:
        if started:
            ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    """torchrun entry point: every rank trains on the prepared run (argv: the path of run.json)."""
    from llmspeed.compress.distill.run import run_rank

    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if len(args) != 1:
        log.error("usage: python -m llmspeed.compress.distill.parallel RUN_JSON")
        return 2
    joined = init_process_group()
    env = torchrun_env()
    share_threads(env[1] if env else 1)
    try:
        run_rank(Path(args[0]))
    finally:
        if joined:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":  # pragma: no cover - torchrun entry
    sys.exit(main())
