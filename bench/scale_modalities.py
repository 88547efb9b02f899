"""Scale goals of the satellite, medical and street-view paths (issue 6 §5), on this machine.

(a) **Satellite**: a ``--scene`` × ``--scene`` 4-band uint16 GeoTIFF (tiled 512, deflate, EPSG:32633),
    generated window by window (never whole in memory), pre-labeled with ``segpipe prelabel --bands 1,2,3``
    and a small U-Net. Reports the peak RSS of every Dask worker process (psutil samples the CLI's
    descendant processes) and the throughput against the model-only bound on the same tiles (the tiles of
    every planned block, context margins included, run through the bare model with the same processes ×
    threads and batch).
(b) **Medical**: a 512 × 512 × ``--slices`` NIfTI volume with an oblique affine, pre-labeled slice by slice,
    exported with ``segpipe export --to nifti``: the affine must come back bit for bit.
(c) **Street view**: ``--images`` photos cycling through RGBA / CMYK / grayscale / 16-bit / palette PNGs and
    JPEGs with EXIF orientations 1..8, of mixed sizes, pre-labeled by a model that is a pure function of
    pixel colour: 0 failures, and every stored label map equal to the upright pattern.

    python bench/scale_modalities.py [--scene 20000] [--slices 300] [--images 2000] [--workers 2]

Standalone (not run by the tests); needs rasterio and nibabel (``segpipe[geo,medical]``) and psutil.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

TILE = 256


# ------------------------------------------------------------------------------------------- helpers


def run_sampled(cmd: list[str], interval: float = 0.1) -> dict[str, Any]:
    """Runs ``cmd``; samples the RSS of each of its descendant processes.

    Returns:
        ``{"wall_s", "root_peak_mb", "procs": [{"pid", "name", "peak_mb"}], "output"}``; ``procs`` are
        the descendants (Dask workers, their decoder children) sorted by peak, largest first.
    """
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks: dict[int, float] = {}
    names: dict[int, str] = {}
    root_peak = 0.0
    stop = threading.Event()

    def sample() -> None:
        nonlocal root_peak
        p = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                root_peak = max(root_peak, p.memory_info().rss / 2**20)
                kids = p.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for q in kids:
                try:
                    rss = q.memory_info().rss / 2**20
                    if q.pid not in names:
                        names[q.pid] = " ".join(q.cmdline()[1:4])[:60]
                except psutil.Error:
                    continue
                peaks[q.pid] = max(peaks.get(q.pid, 0.0), rss)
            time.sleep(interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = proc.communicate()
    stop.set()
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    procs = sorted(({"pid": k, "name": names.get(k, "?"), "peak_mb": v} for k, v in peaks.items()),
                   key=lambda d: -float(d["peak_mb"]))  # type: ignore[arg-type]
    return {"wall_s": time.perf_counter() - t0, "root_peak_mb": root_peak, "procs": procs, "output": out}


def segpipe(*args: str) -> list[str]:
    """The CLI command line (this interpreter, so the same venv)."""
    return [sys.executable, "-m", "segpipe", "--quiet", *args]


def last_run(store: Path) -> dict[str, Any]:
    """The run report of the store's (only) run."""
    return json.loads(next((store / ".segpipe" / "runs").glob("*.json")).read_text())


def tiny_unet(path: Path, classes: int = 4) -> Path:
    """A small random-weight U-Net (speed does not depend on the weights)."""
    import torch

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model

    torch.manual_seed(0)
    kw: dict[str, Any] = {"base": 8, "depth": 2}
    cats = [{"index": i, "id": i, "name": f"c{i}", "color": None, "isthing": False} for i in range(classes)]
    save_checkpoint(path, build_model("unet", classes, **kw),
                    CheckpointMeta(arch="unet", task="semantic", num_classes=classes, categories=cats,
                                   tile_size=[TILE, TILE], tile_overlap=0.25, model_kwargs=kw))
    return path


# ------------------------------------------------------------------------------------------- (a) satellite


def write_scene(path: Path, side: int, block: int = 1024) -> None:
    """A ``side``² 4-band uint16 GeoTIFF written block by block (memory: one block)."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 5, size=(side // 64 + 2, side // 64 + 2))  # land-cover cells of 64 px
    levels = np.array([[900, 1200, 800, 3000], [300, 500, 400, 200], [1500, 1400, 1300, 1800],
                       [2500, 2600, 2400, 2000], [600, 1800, 700, 4000]], dtype=np.uint16)
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 4, "dtype": "uint16",
               "crs": "EPSG:32633", "transform": from_origin(500000.0, 5000000.0, 0.5, 0.5), "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate", "BIGTIFF": "IF_SAFER"}
    with rasterio.open(path, "w", **profile) as dst:
        for y0 in range(0, side, block):
            for x0 in range(0, side, block):
                h, w = min(block, side - y0), min(block, side - x0)
                yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w]
                cls = coarse[yy // 64, xx // 64]
                data = levels[cls].transpose(2, 0, 1).astype(np.int32)
                data += rng.integers(-60, 60, size=data.shape, dtype=np.int32)
                dst.write(np.clip(data, 0, 65535).astype(np.uint16),
                          window=rasterio.windows.Window(x0, y0, w, h))


def scene_tiles(scene: Path) -> int:
    """Tiles the run's predictor processes: every planned block (with its margin) cut into the tile grid."""
    from segpipe.core.tiles import overlap_pixels, tile_grid
    from segpipe.kernels.prelabel.tasks import SceneBlock
    from segpipe.pipeline.prelabel import plan_tasks
    from segpipe.storage.manifest import describe

    entry = describe(scene.parent, scene.name)
    n = 0
    for t in plan_tasks([entry], "bench"):
        e, part = t.entry, t.part
        assert isinstance(part, SceneBlock)
        y0, y1, x0, x1 = part.window
        m = part.margin
        h = min(e.height, y1 + m) - max(0, y0 - m)
        w = min(e.width, x1 + m) - max(0, x0 - m)
        n += len(tile_grid(h, w, TILE, overlap_pixels(TILE, 0.25)))
    return n


MODEL_ONLY = r"""
import sys, time, torch
from segpipe.models.checkpoint import load_checkpoint, build_from_checkpoint
torch.set_num_threads(int(sys.argv[2])); torch.set_num_interop_threads(1)
model = build_from_checkpoint(load_checkpoint(sys.argv[1])).eval()
n, batch, tile = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
# The faster of the two input layouts: NCHW-contiguous, and channels-last (what segpipe feeds).
best = 0.0
for x in (torch.randn(batch, 3, tile, tile), torch.randn(batch, tile, tile, 3).permute(0, 3, 1, 2)):
    with torch.inference_mode():
        model(x)
        t = time.perf_counter()
        for _ in range(max(1, n // batch)):
            model(x).softmax(1).argmax(1)
    best = max(best, max(1, n // batch) * batch / (time.perf_counter() - t))
print(best)
"""


def model_only_tiles_s(ckpt: Path, procs: int, threads: int, n: int, batch: int) -> float:
    """Aggregate tiles/s of ``procs`` bare-model processes running at once."""
    ps = [subprocess.Popen([sys.executable, "-c", MODEL_ONLY, str(ckpt), str(threads), str(max(batch, n // procs)),
                            str(batch), str(TILE)], stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    return sum(float(p.communicate()[0].strip().splitlines()[-1]) for p in ps)


def bench_scene(tmp: Path, side: int, workers: int, threads: int, batch: int) -> dict[str, Any]:
    scene = tmp / "scene" / "scene.tif"
    scene.parent.mkdir(parents=True)
    t = time.perf_counter()
    write_scene(scene, side)
    gen_s = time.perf_counter() - t
    ckpt = tiny_unet(tmp / "unet.ckpt")
    store = tmp / "scene.zarr"
    r = run_sampled(segpipe("prelabel", str(scene.parent), "-m", str(ckpt), "-o", str(store), "--bands", "1,2,3",
                            "-w", str(workers), "--threads", str(threads), "--batch", str(batch), "--no-probs"))
    rep = last_run(store)
    n_tiles = scene_tiles(scene)
    bound = model_only_tiles_s(ckpt, workers, threads, min(n_tiles, 400), batch)
    # Task phase only (the report's throughput = receipts / run time, after cluster start and ingest).
    thr = float(rep.get("throughput_img_s") or 0.0)
    run_s = rep["images"]["done"] / thr if thr > 0 else r["wall_s"]
    workers_mb = [p["peak_mb"] for p in r["procs"]]
    return {
        "scene": f"{side}x{side}x4 uint16", "file_mb": scene.stat().st_size / 2**20, "generate_s": gen_s,
        "blocks": rep["images"]["done"], "failed": rep["images"]["failed"], "tiles": n_tiles,
        "wall_s": r["wall_s"], "run_s": run_s, "mpx_s": side * side / 1e6 / r["wall_s"],
        "tiles_s": n_tiles / r["wall_s"], "bound_tiles_s": bound, "ratio_end_to_end": n_tiles / r["wall_s"] / bound,
        "ratio_run": n_tiles / run_s / bound, "stage_seconds": rep.get("stage_seconds"),
        "peak_rss_worker_mb": max(workers_mb, default=0.0), "peak_rss_cli_mb": r["root_peak_mb"],
        "procs": r["procs"][:6],
    }


# ------------------------------------------------------------------------------------------- (b) medical


def bench_volume(tmp: Path, slices: int, workers: int, threads: int) -> dict[str, Any]:
    import nibabel as nib

    from segpipe.synth.native import synthetic_affine

    vol = tmp / "vol"
    vol.mkdir(parents=True)
    rng = np.random.default_rng(1)
    data = np.empty((512, 512, slices), dtype=np.int16)
    base = (rng.random((8, 8)) * 1500 - 1000).astype(np.int16)
    tile = np.kron(base, np.ones((64, 64), np.int16))
    for z in range(slices):  # slice by slice: the array is the file's size, the noise is per slice
        data[:, :, z] = tile + rng.integers(-30, 30, (512, 512), dtype=np.int16)
    affine = synthetic_affine(3, 512, 512)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    src = vol / "ct.nii.gz"
    nib.save(img, src)
    del data
    ckpt = tiny_unet(tmp / "unet_med.ckpt")
    store = tmp / "vol.zarr"
    r = run_sampled(segpipe("prelabel", str(vol), "-m", str(ckpt), "-o", str(store), "-w", str(workers),
                            "--threads", str(threads), "--window", "40,400", "--no-probs"))
    rep = last_run(store)
    out = tmp / "nifti"
    subprocess.run(segpipe("export", str(store), str(out), "--to", "nifti", "-w", "0"), check=True,
                   capture_output=True)
    (exported,) = [p for p in out.rglob("*.nii*")]
    a: Any = nib.load(exported)
    b: Any = nib.load(src)
    ha, hb = a.header, b.header
    return {
        "volume": f"512x512x{slices}", "slices_done": rep["images"]["done"], "failed": rep["images"]["failed"],
        "wall_s": r["wall_s"], "slices_s": slices / r["wall_s"],
        "peak_rss_worker_mb": max((p["peak_mb"] for p in r["procs"]), default=0.0),
        "shape_equal": tuple(a.shape) == tuple(b.shape), "affine_exact": bool(np.array_equal(a.affine, b.affine)),
        "sform_exact": bool(np.array_equal(ha.get_sform(), hb.get_sform())),
        "qform_code": int(ha["qform_code"]), "sform_code": int(ha["sform_code"]),
    }


# ------------------------------------------------------------------------------------------- (c) street view


def _pattern(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx < w // 2) | (yy < h // 4)


def write_streetview(folder: Path, n: int) -> dict[str, tuple[int, int]]:
    """``n`` photos cycling through modes and EXIF orientations; returns ``{file: upright (h, w)}``."""
    from PIL import Image

    from segpipe.synth.native import exif_stored

    folder.mkdir(parents=True)
    sizes = [(256, 384), (192, 256), (320, 480), (128, 192)]   # multiples of 16 (JPEG MCU-aligned edges)
    kinds = ["rgba", "cmyk", "gray", "gray16", "palette", *[f"exif{o}" for o in range(1, 9)]]
    out: dict[str, tuple[int, int]] = {}
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        kind = kinds[i % len(kinds)]
        p = _pattern(h, w)
        g = np.where(p, 255, 0).astype(np.uint8)
        rgb = np.repeat(g[..., None], 3, axis=2)
        name = f"{i:05d}_{kind}"
        if kind == "rgba":
            name += ".png"
            Image.fromarray(np.dstack([rgb, np.full((h, w), 200, np.uint8)]), mode="RGBA").save(folder / name)
        elif kind == "cmyk":
            name += ".jpg"
            Image.fromarray(rgb).convert("CMYK").save(folder / name, quality=92)
        elif kind == "gray":
            name += ".jpg"
            Image.fromarray(g, mode="L").save(folder / name, quality=92)
        elif kind == "gray16":
            name += ".png"
            Image.fromarray(np.where(p, 65535, 0).astype(np.uint16)).save(folder / name)
        elif kind == "palette":
            name += ".png"
            im = Image.fromarray(p.astype(np.uint8), mode="P")
            im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
            im.save(folder / name)
        else:
            o = int(kind[4:])
            name += ".jpg"
            ex = Image.Exif()
            ex[0x0112] = o
            Image.fromarray(exif_stored(rgb, o)).save(folder / name, quality=92, exif=ex.tobytes())
        out[name] = (h, w)
    return out


def colour_model(path: Path) -> Path:
    """A depth-0 U-Net using only the centre tap of its 3×3 convs: bright → class 1, dark → class 0."""
    import torch
    from torch import nn

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model

    kw: dict[str, Any] = {"base": 2, "depth": 0}
    model = build_model("unet", 2, **kw)
    c1, c2, head = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        c1.weight.zero_()
        c1.weight[0, :, 1, 1] = 1.0
        c1.weight[1, :, 1, 1] = -1.0
        c2.weight.zero_()
        c2.weight[0, 0, 1, 1] = c2.weight[1, 1, 1, 1] = 1.0
        head.weight.zero_()
        head.weight[0, :, 0, 0] = torch.tensor([-1.0, 1.0])
        head.weight[1, :, 0, 0] = torch.tensor([1.0, -1.0])
        assert head.bias is not None
        head.bias.zero_()
    cats = [{"index": i, "id": i, "name": n, "color": None, "isthing": False} for i, n in enumerate(["dark", "bright"])]
    save_checkpoint(path, model, CheckpointMeta(arch="unet", task="semantic", num_classes=2, categories=cats,
                                                tile_size=[256, 256], tile_overlap=0.0, model_kwargs=kw,
                                                mean=[0.5] * 3, std=[0.5] * 3))
    return path


def bench_streetview(tmp: Path, n: int, workers: int, threads: int) -> dict[str, Any]:
    import zarr

    sizes = write_streetview(tmp / "photos", n)
    ckpt = colour_model(tmp / "colour.ckpt")
    store = tmp / "sv.zarr"
    r = run_sampled(segpipe("prelabel", str(tmp / "photos"), "-m", str(ckpt), "-o", str(store), "-w", str(workers),
                            "--threads", str(threads), "--no-probs"))
    rep = last_run(store)
    root = zarr.open_group(str(store), mode="r")
    wrong: list[str] = []
    checked = 0
    images = root["images"]
    assert isinstance(images, zarr.Group)
    for key in images.group_keys():
        g = images[key]
        assert isinstance(g, zarr.Group)
        name = Path(str(g.attrs["file"])).name
        h, w = sizes[name]
        arr = g["labels"]
        assert isinstance(arr, zarr.Array)
        labels = np.asarray(arr[...])
        checked += 1
        if labels.shape != (h, w) or (labels.astype(bool) != _pattern(h, w)).mean() > 0.001:
            wrong.append(name)
    return {"images": n, "done": rep["images"]["done"], "failed": rep["images"]["failed"], "checked": checked,
            "wrong_orientation_or_mask": len(wrong), "wrong_examples": wrong[:5], "wall_s": r["wall_s"],
            "img_s": n / r["wall_s"], "peak_rss_worker_mb": max((p["peak_mb"] for p in r["procs"]), default=0.0)}


# ------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", type=int, default=20000, help="GeoTIFF side in pixels (0 skips part a).")
    ap.add_argument("--slices", type=int, default=300, help="NIfTI slices (0 skips part b).")
    ap.add_argument("--images", type=int, default=2000, help="Street-view photos (0 skips part c).")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--keep", action="store_true", help="Keep the temporary folder.")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="segpipe-bench-modal-"))
    import psutil

    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.1f} GiB; "
          f"workers {args.workers} × {args.threads} threads; tmp {tmp}", flush=True)
    results: dict[str, Any] = {}
    try:
        if args.scene:
            a = bench_scene(tmp / "a", args.scene, args.workers, args.threads, args.batch)
            results["satellite"] = a
            print(f"(a) scene {a['scene']} ({a['file_mb']:.0f} MB deflate, generated in {a['generate_s']:.0f} s): "
                  f"{a['blocks']} blocks, {a['failed']} failed, {a['tiles']} tiles of {TILE}²; "
                  f"wall {a['wall_s']:.1f} s "
                  f"({a['mpx_s']:.2f} Mpx/s, {a['tiles_s']:.1f} tiles/s); model-only bound {a['bound_tiles_s']:.1f} "
                  f"tiles/s → ratio {a['ratio_end_to_end']:.2f} end to end, {a['ratio_run']:.2f} while running; "
                  f"peak RSS per worker {a['peak_rss_worker_mb']:.0f} MB (CLI {a['peak_rss_cli_mb']:.0f} MB)",
                  flush=True)
            for p in a["procs"]:
                print(f"    pid {p['pid']}: {p['peak_mb']:.0f} MB  {p['name']}")
        if args.slices:
            b = bench_volume(tmp / "b", args.slices, args.workers, args.threads)
            results["medical"] = b
            print(f"(b) volume {b['volume']}: {b['slices_done']} slices done, {b['failed']} failed, wall "
                  f"{b['wall_s']:.1f} s ({b['slices_s']:.2f} slices/s); "
                  f"exported NIfTI: shape equal {b['shape_equal']}, "
                  f"affine exact {b['affine_exact']}, sform exact {b['sform_exact']} (codes q{b['qform_code']} "
                  f"s{b['sform_code']}); peak RSS per worker {b['peak_rss_worker_mb']:.0f} MB", flush=True)
        if args.images:
            c = bench_streetview(tmp / "c", args.images, args.workers, args.threads)
            results["streetview"] = c
            print(f"(c) street view: {c['images']} photos (RGBA/CMYK/gray/16-bit/palette/EXIF 1-8, 4 sizes): "
                  f"{c['done']} done, {c['failed']} failed, {c['wrong_orientation_or_mask']} of {c['checked']} label "
                  f"maps not upright; wall {c['wall_s']:.1f} s ({c['img_s']:.1f} img/s); peak RSS per worker "
                  f"{c['peak_rss_worker_mb']:.0f} MB", flush=True)
        print(json.dumps(results, default=str))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
