"""Which GPUs this machine shows, and the embedded cluster's worker plan for them (pure but for the probe).

On a machine with CUDA, the embedded cluster starts one worker per GPU it may use, each pinned to its
GPU by its own ``CUDA_VISIBLE_DEVICES`` (so ``--device auto`` and ``cuda`` mean *that* GPU in it) and
advertising the Dask resource ``GPU=1``; model tasks ask for that resource, so on a user's cluster of
``dask worker --resources GPU=1`` processes they land only on workers that have a GPU. It is the
rotation dask-cuda's ``LocalCUDACluster`` does, which is used where installed.

The probe reads ``CUDA_VISIBLE_DEVICES`` and the NVIDIA driver's ``/proc/driver/nvidia/gpus/`` rather
than importing torch: the driver process stays light (torch's import takes 1-2 s).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from segpipe.errors import ConfigError

#: The Dask resource a worker with a GPU advertises and a model task on a GPU asks for.
GPU_RESOURCE = "GPU"
#: Where the NVIDIA driver lists the GPUs of this machine (one folder per GPU, by PCI address).
NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")


def visible_gpus(environ: dict[str, str] | None = None, proc: Path = NVIDIA_PROC) -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (``["0", "1"]``), or [].

    ``CUDA_VISIBLE_DEVICES`` wins when set (an empty value or ``-1`` means none, as CUDA reads it);
    else one per GPU the NVIDIA driver lists.

    Args:
        environ: The environment (default: this process's).
        proc: The driver's GPU listing folder.
    """
    env = os.environ if environ is None else environ
    given = env.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        names = [g.strip() for g in given.split(",") if g.strip()]
        # CUDA stops at the first invalid entry; -1 is the customary "no GPU"
        out: list[str] = []
        for g in names:
            if g.startswith("-"):
                break
            out.append(g)
        return out
    try:
        return [str(i) for i in range(sum(1 for e in proc.iterdir() if e.is_dir()))]
    except OSError:
        return []


def parse_gpus(text: str, visible: list[str]) -> list[str]:
    """``--gpus 0,2`` → the chosen GPUs, checked against the visible ones (indices into them).

    Raises:
        ConfigError: naming ``--gpus``: not a list of indices, a repeat, or an index with no GPU.
    """
    try:
        idx = [int(t) for t in text.split(",")]
    except ValueError:
        raise ConfigError(f"--gpus {text!r}: expected comma-separated GPU indices, e.g. 0,2") from None
    if len(set(idx)) != len(idx):
        raise ConfigError(f"--gpus {text!r}: a GPU is named twice")
    bad = [i for i in idx if not 0 <= i < len(visible)]
    if bad:
        have = f"GPUs 0-{len(visible) - 1}" if visible else "no GPU"
        raise ConfigError(f"--gpus {text!r}: this machine shows {have}")
    return [visible[i] for i in idx]


@dataclass(frozen=True)
class WorkerPlan:
    """One worker process of the embedded cluster.

    Attributes:
        name: Its Dask name.
        nthreads: Tasks it runs at once (on a GPU worker: decode threads that keep its GPU fed).
        env: Environment set in the worker process (``CUDA_VISIBLE_DEVICES`` pins its GPU).
        resources: Dask resources it advertises (``{"GPU": 1}`` on a GPU worker).
    """

    name: str
    nthreads: int
    env: dict[str, str] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def gpu(self) -> str | None:
        """The GPU it is pinned to, or None for a CPU worker."""
        return self.env.get("CUDA_VISIBLE_DEVICES")


def plan_workers(n_cpu_workers: int, threads: int, *, gpus: list[str], cores: int) -> list[WorkerPlan]:
    """The embedded cluster's workers: one per GPU when there are GPUs, else ``n_cpu_workers`` CPU ones.

    Args:
        n_cpu_workers: CPU workers to start when there is no GPU.
        threads: Threads per CPU worker.
        gpus: The GPUs to use (``CUDA_VISIBLE_DEVICES`` names), e.g. from :func:`visible_gpus`.
        cores: The cores of this machine: a GPU worker gets its share (at least 2) as decode threads.

    Returns:
        The plan, one entry per worker process.
    """
    if not gpus:
        return [WorkerPlan(name=f"cpu-{i}", nthreads=threads) for i in range(n_cpu_workers)]
    per = max(2, cores // len(gpus))
    return [WorkerPlan(name=f"gpu-{g}", nthreads=per, env={"CUDA_VISIBLE_DEVICES": g},
                       resources={GPU_RESOURCE: 1}) for g in gpus]


def worker_specs(plan: list[WorkerPlan], *, memory_limit: str | int, silence_logs: int) -> dict[str, dict[str, object]]:
    """The plan as ``distributed.SpecCluster`` worker specs (``Nanny`` processes)."""
    from distributed import Nanny  # lazy: distributed costs 0.7 s; the driver plans workers without it

    return {
        w.name: {"cls": Nanny, "options": {"nthreads": w.nthreads, "env": dict(w.env), "resources": dict(w.resources),
                                           "memory_limit": memory_limit, "silence_logs": silence_logs}}
        for w in plan
    }


def advertises_gpu(client: object) -> bool:
    """Whether any worker of ``client``'s cluster advertises the ``GPU`` resource (False in-process)."""
    info = getattr(client, "scheduler_info", None)
    if info is None:
        return False
    try:
        workers = info().get("workers", {})
    except Exception:  # noqa: BLE001 - a scheduler that cannot answer has no GPU worker we could use
        return False
    return any(float((w.get("resources") or {}).get(GPU_RESOURCE, 0)) > 0 for w in workers.values())
