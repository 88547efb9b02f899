"""Run a command and measure its wall time and the peak RSS of its whole process tree."""

from __future__ import annotations

import resource
import subprocess
import threading
import time
from collections.abc import Sequence

import psutil


def run_measured(cmd: Sequence[str], *, env: dict[str, str] | None = None, interval: float = 0.05) -> dict[str, float]:
    """Runs ``cmd``; returns ``{"wall_s", "cpu_s", "peak_rss_mb", "driver_rss_mb", "output"}``: the peak of the
    RSS summed over the process and its children, and of the process's own (the driver), sampled every
    ``interval`` seconds. Raises ``CalledProcessError`` on failure."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = own_peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak, own_peak
        try:
            p = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            try:
                own = p.memory_info().rss
                total = own
                for q in p.children(recursive=True):
                    try:
                        total += q.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                return
            peak, own_peak = max(peak, total), max(own_peak, own)
            time.sleep(interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = proc.communicate()
    stop.set()
    th.join()
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # user + system time of the command and every descendant it waited for (Dask workers included):
    # unlike wall time, barely affected by other jobs sharing the machine.
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, list(cmd), output=out)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak / 2**20,  # type: ignore[dict-item]
            "driver_rss_mb": own_peak / 2**20, "output": out}
