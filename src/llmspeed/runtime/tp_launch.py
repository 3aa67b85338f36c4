"""Starting a tensor-parallel group: rank 0 is the calling process, ranks 1..N-1 follower processes on 127.0.0.1.

`start_group` (what `llmspeed.load(..., tp=N)` calls) either joins the group torchrun set up (RANK / WORLD_SIZE /
MASTER_ADDR in the environment: every rank runs the same command) or spawns `python -m llmspeed.runtime.tp_launch
SPEC_JSON` N-1 times. A spawned follower loads its shard, says so in a TCPStore rank 0 hosts on loopback, then
joins the process group (gloo on CPU, nccl on CUDA); rank 0 waits for those keys while watching the processes,
so a follower that fails to load is one clear error, not a hang. A follower leaves when rank 0 stops the group
(`TPDriver.close`) or when its parent process is gone.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from llmspeed.layers.parallel import TPGroup

if TYPE_CHECKING:
    from llmspeed.models.loading import Loaded

log = logging.getLogger(__name__)
GROUP_TIMEOUT = datetime.timedelta(days=7)  # an idle server's followers wait in a broadcast for the next request
READY_TIMEOUT_S = 600.0


@dataclass
class Launched:
    tp: TPGroup
    procs: list[subprocess.Popen] = field(default_factory=list)
    torchrun: bool = False
    store: dist.TCPStore | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def join(self) -> None:
        """Rank 0 of a spawned group: wait until every follower loaded its shard, then form the process group."""
        if self.store is None or dist.is_initialized():
            return
        try:
            _wait_ready(self.store, self.procs)
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
            dist.init_process_group(backend_for(self.device), store=self.store, rank=0, world_size=self.tp.world,
                                    timeout=GROUP_TIMEOUT)
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    def shutdown(self, timeout: float = 30.0) -> None:
        """After the driver sent the stop: wait for the followers, leave the process group."""
        for p in self.procs:
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("tensor-parallel follower pid %d did not stop: killing it", p.pid)
                p.kill()
        if dist.is_initialized():
            dist.destroy_process_group()


def torchrun_env() -> tuple[int, int] | None:
    """(rank, world) when this process was started by torchrun (or another launcher setting RANK/WORLD_SIZE)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return None


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: torch.device, rank: int) -> torch.device:
    """A rank's device: the CPU, or GPU `rank` modulo the GPUs here (one GPU per rank for nccl)."""
    if device.type != "cuda":
        return device
    return torch.device("cuda", rank % max(torch.cuda.device_count(), 1))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_group(model: str, dtype: str, world: int, threads: int | None, device: torch.device) -> Launched:
    """Join torchrun's group, or spawn the followers (they start loading their shards at once); `Launched.join`
    then connects rank 0 once the followers are ready."""
    env = torchrun_env()
    if env is not None:
        rank, size = env
        if size != world:
            raise ValueError(f"--tp {world} does not match torchrun's WORLD_SIZE={size}")
        dist.init_process_group(backend_for(device), timeout=GROUP_TIMEOUT)
        return Launched(TPGroup(rank, world), torchrun=True)
    if dist.is_initialized():
        raise ValueError("this process already holds a tensor-parallel group: close() that LLM first")
    port = _free_port()
    store = dist.TCPStore("127.0.0.1", port, world, is_master=True, timeout=datetime.timedelta(seconds=READY_TIMEOUT_S),
                          wait_for_workers=False)
    per_rank = threads or max(1, (os.cpu_count() or 1) // world)
    procs = []
    for r in range(1, world):
        spec = {"model": model, "dtype": dtype, "rank": r, "world": world, "port": port, "threads": per_rank,
                "device": str(device), "parent": os.getpid()}
        env_r = {"GLOO_SOCKET_IFNAME": "lo"} | os.environ | {"OMP_NUM_THREADS": str(per_rank)}
        procs.append(subprocess.Popen([sys.executable, "-m", "llmspeed.runtime.tp_launch", json.dumps(spec)],
                                      env=env_r))
    return Launched(TPGroup(0, world), procs, store=store, device=device)


def load_rank(model: str, dtype: str, world: int, threads: int | None,
              device: torch.device) -> tuple[Loaded, Launched, torch.device]:
    """Start (or, under torchrun, join) the group and load this rank's shard. Rank 0 gets (shard, group, device);
    a torchrun follower serves rank 0's forwards here and then ends the process."""
    from llmspeed.models.sharded import check_tp, load_shard, saved_config
    from llmspeed.models.spec import model_dir, parse_model_spec
    from llmspeed.runtime.options import RuntimeOptions
    from llmspeed.runtime.plans import prepare_model
    from llmspeed.runtime.threads import set_threads
    from llmspeed.runtime.tp import follow

    check_tp(saved_config(model_dir(parse_model_spec(model))), world)  # before any process starts
    launched = start_group(model, dtype, world, threads, device)
    dev = rank_device(device, launched.tp.rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # nccl: one GPU per rank
    try:
        set_threads(threads or max(1, (os.cpu_count() or 1) // world))
        loaded = load_shard(model, dtype, launched.tp)
        loaded.model.to(dev)
        launched.join()
    except BaseException:
        launched.kill()
        raise
    if launched.tp.rank != 0:  # torchrun: this rank serves rank 0's forwards, then the process ends
        prepare_model(loaded.model, RuntimeOptions(prefill="fp32"))  # as a spawned follower (float weights only)
        follow(loaded.model, launched.tp, dev)
        launched.shutdown()
        sys.exit(0)
    return loaded, launched, dev


def _wait_ready(store: dist.TCPStore, procs: list[subprocess.Popen]) -> None:
    """Until every follower wrote `ready/<rank>` (its shard is loaded); a follower that exits first is an error."""
    t0 = time.monotonic()
    pending = set(range(1, len(procs) + 1))
    while pending:
        pending = {r for r in pending if not store.check([f"ready/{r}"])}
        for r, p in enumerate(procs, start=1):
            if r in pending and p.poll() is not None:
                raise RuntimeError(f"tensor-parallel rank {r} exited with code {p.returncode} while loading its shard")
        if time.monotonic() - t0 > READY_TIMEOUT_S:
            raise RuntimeError(f"tensor-parallel ranks {sorted(pending)} not ready after {READY_TIMEOUT_S:.0f} s")
        if pending:
            time.sleep(0.05)


def _watch_parent(parent: int) -> None:
    """A spawned follower exits when the process that started it is gone (rank 0 killed without a stop)."""
    def loop() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(1.0)

    threading.Thread(target=loop, daemon=True, name="tp-parent-watch").start()


def follower_main(spec: dict) -> int:
    """A spawned follower: load the shard, report ready, join the group, follow rank 0 until it stops."""
    from llmspeed.models.sharded import load_shard
    from llmspeed.runtime.options import RuntimeOptions
    from llmspeed.runtime.plans import prepare_model
    from llmspeed.runtime.tp import follow

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole process group: rank 0 stops us
    _watch_parent(int(spec["parent"]))
    torch.set_num_threads(int(spec["threads"]))
    rank, world = int(spec["rank"]), int(spec["world"])
    device = rank_device(torch.device(spec["device"]), rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # nccl: one GPU per rank
    tp = TPGroup(rank, world)
    loaded = load_shard(spec["model"], spec["dtype"], tp)
    model = loaded.model.to(device)
    prepare_model(model, RuntimeOptions(prefill="fp32"))
    store = dist.TCPStore("127.0.0.1", int(spec["port"]), world, is_master=False,
                          timeout=datetime.timedelta(seconds=READY_TIMEOUT_S))
    store.set(f"ready/{rank}", "1")
    dist.init_process_group(backend_for(device), store=store, rank=rank, world_size=world, timeout=GROUP_TIMEOUT)
    try:
        steps = follow(model, tp, device)
        log.info("rank %d: stopped after %d forwards", rank, steps)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":  # pragma: no cover - spawned by start_group
    logging.basicConfig(level=os.environ.get("LLMSPEED_LOG", "WARNING").upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    sys.exit(follower_main(json.loads(sys.argv[1])))
