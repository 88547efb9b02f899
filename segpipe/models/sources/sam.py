"""SAM-family promptable models from a local folder: what ``segpipe prelabel --prompts`` runs.

A SAM model turns a prompt (here: a box) into a mask; it is not a segmentation model of its own, so
it is no :class:`~segpipe.models.sources.base.ModelSource` (those follow a predictor's forward
convention) and a SAM folder passed without ``--prompts`` is refused by the Hugging Face source.

Read, in three forms:

* a ``transformers`` ``save_pretrained`` folder whose ``config.json`` names ``model_type`` ``sam``
  (:class:`transformers.SamModel`) or ``sam2`` (:class:`transformers.Sam2Model`), with its
  ``SamProcessor`` / ``Sam2Processor`` when the folder has one (``processor_config.json`` /
  ``preprocessor_config.json``; otherwise a processor sized to the model's input side). Never with
  ``trust_remote_code``: the classes are transformers' own, the weights are read by transformers
  (safetensors, or ``torch.load(weights_only=True)``);
* an ONNX encoder/decoder pair (:data:`ONNX_PAIR_FILE`, else one ``*encoder*.onnx`` and one
  ``*decoder*.onnx`` in the folder) in the layout of segment-anything's ``scripts/export_onnx_model.py``:
  the image encoder takes one ``(1, 3, S, S)`` normalised, zero-padded image and gives the image
  embeddings; the decoder takes :data:`DECODER_INPUTS` and gives :data:`DECODER_OUTPUTS` (a box is two
  points labelled 2 and 3). The graphs run in onnxruntime, never as Python.

Not read (each refused in one line): SAM 2 video / SAM 3 / SAM-HQ / EdgeTAM folders, and SAM 2 ONNX
exports (their decoder takes the encoder's high-resolution features too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segpipe.errors import CheckpointError
from segpipe.models.sources.huggingface import quiet
from segpipe.models.sources.onnx import make_session

#: ``model_type`` values segpipe runs, and the transformers classes of each.
SAM_TYPES: dict[str, tuple[str, str]] = {"sam": ("SamModel", "SamProcessor"),
                                          "sam2": ("Sam2Model", "Sam2Processor")}
#: SAM-family ``model_type`` values recognised but not run (named in the refusal).
OTHER_SAM_TYPES = ("sam2_video", "sam3", "sam3_tracker", "sam_hq", "edgetam")
#: What ``--prompts`` wants, for every refusal.
WANTED = ("--prompts needs a SAM model folder: saved by transformers (config.json model_type \"sam\" or "
          "\"sam2\"), or an ONNX encoder.onnx + decoder.onnx pair (segment-anything's export layout)")
#: A file an ONNX SAM folder may carry to name its two graphs: ``{"encoder": "x.onnx", "decoder": "y.onnx"}``
#: (relative to the folder). Without it, the folder holds one ``*encoder*.onnx`` and one ``*decoder*.onnx``.
ONNX_PAIR_FILE = "sam_onnx.json"
#: The decoder's inputs (segment-anything's ``SamOnnxModel``), all float32.
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")
#: The decoder's outputs segpipe reads (``low_res_masks`` may be there too).
DECODER_OUTPUTS = ("masks", "iou_predictions")


@dataclass(frozen=True)
class SamInfo:
    """A SAM folder as the driver reads it (JSON only, no torch).

    Attributes:
        path: The folder.
        model_type: ``config.json``'s ``model_type``, or ``onnx`` for an ONNX encoder/decoder pair.
        image_size: The side the image encoder takes (the side its input is padded to).
        encoder: The ONNX image encoder (an ONNX pair only).
        decoder: The ONNX prompt decoder (an ONNX pair only).
    """

    path: Path
    model_type: str
    image_size: int
    encoder: Path | None = None
    decoder: Path | None = None

    @property
    def arch(self) -> str:
        """``sam/<model_type>``: the arch a store records (the ``/`` marks a model without a builder)."""
        return f"sam/{self.model_type}"


def read_sam(path: str | Path) -> SamInfo:
    """Checks that ``path`` is a SAM folder segpipe runs (driver side, torch-free).

    Raises:
        CheckpointError: one line naming the path and what it is instead.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError("no such model folder", path=p, hint=WANTED)
    cfg_file = p / "config.json"
    if p.is_file() and p.suffix.lower() == ".onnx":
        raise CheckpointError("a single ONNX file: an ONNX SAM is a folder with its image encoder and its prompt "
                              "decoder (encoder.onnx + decoder.onnx)", path=p, hint=WANTED)
    if p.is_dir() and not cfg_file.is_file() and ((p / ONNX_PAIR_FILE).is_file() or any(p.glob("*.onnx"))):
        return read_onnx_pair(p)
    if not p.is_dir() or not cfg_file.is_file():
        raise CheckpointError("not a SAM model folder (no config.json)", path=p, hint=WANTED)
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"config.json is not valid JSON: {e}", path=cfg_file) from None
    if not isinstance(cfg, dict):
        raise CheckpointError("config.json is not a JSON object", path=cfg_file)
    if cfg.get("auto_map"):
        raise CheckpointError("its config.json maps to custom code (auto_map) that needs trust_remote_code; segpipe "
                              "never runs code from a model folder", path=cfg_file, where="auto_map", hint=WANTED)
    model_type = str(cfg.get("model_type", ""))
    if model_type in OTHER_SAM_TYPES:
        raise CheckpointError(f"a {model_type} model: segpipe runs SAM and SAM 2 (model_type sam, sam2)", path=cfg_file,
                              where="model_type", hint=WANTED)
    if model_type not in SAM_TYPES:
        raise CheckpointError(f"not a SAM model (model_type {model_type or 'missing'!s})", path=cfg_file,
                              where="model_type", hint=WANTED)
    # SAM's vision encoder states its input side; SAM 2's prompt encoder does (its backbone's is a pair)
    section = "vision_config" if model_type == "sam" else "prompt_encoder_config"
    sub = cfg.get(section)
    sub = sub if isinstance(sub, dict) else {}
    size = sub.get("image_size", 1024)
    if not isinstance(size, int) or isinstance(size, bool) or size < 16:
        raise CheckpointError(f"{section}.image_size {size!r} is not an image side", path=cfg_file,
                              where=f"{section}.image_size")
    return SamInfo(p, model_type, size)


def _pair_files(folder: Path) -> tuple[Path, Path]:
    """The encoder and decoder files of an ONNX SAM folder (named by :data:`ONNX_PAIR_FILE` or by their names)."""
    names = folder / ONNX_PAIR_FILE
    if names.is_file():
        try:
            spec = json.loads(names.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"not valid JSON: {e}", path=names) from None
        files: list[Path] = []
        for key in ("encoder", "decoder"):
            value = spec.get(key) if isinstance(spec, dict) else None
            if not isinstance(value, str) or not value:
                raise CheckpointError(f"{key} must name the {key}'s .onnx file in this folder, got {value!r}",
                                      path=names, where=key)
            f = (folder / value).resolve()
            if folder.resolve() not in f.parents or not f.is_file():
                raise CheckpointError(f"{key} {value!r} is no file in {folder}", path=names, where=key)
            files.append(f)
        return files[0], files[1]
    graphs = sorted(folder.glob("*.onnx"))
    found = {part: [f for f in graphs if part in f.name.lower()] for part in ("encoder", "decoder")}
    for part in ("encoder", "decoder"):
        if len(found[part]) != 1:
            have = ", ".join(f.name for f in graphs) or "none"
            what = f"no {part}" if not found[part] else f"{len(found[part])} {part}s"
            raise CheckpointError(f"an ONNX SAM folder needs one image encoder (*encoder*.onnx) and one prompt "
                                  f"decoder (*decoder*.onnx); it has {what} (.onnx files: {have})",
                                  path=folder, hint=("" if found[part] else f"add the {part}, or ") +
                                  f'name both graphs in {ONNX_PAIR_FILE} ({{"encoder": "....onnx", "decoder": '
                                  '"....onnx"})')
    return found["encoder"][0], found["decoder"][0]


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None


def read_onnx_pair(folder: Path) -> SamInfo:
    """Checks an ONNX SAM folder: both graphs load, and their inputs and outputs are the layout segpipe runs.

    Raises:
        CheckpointError: a graph missing, unreadable, or with other inputs/outputs (one line naming the file
            and what is expected).
    """
    encoder, decoder = _pair_files(folder)
    sessions = {}
    for f in (encoder, decoder):
        try:
            sessions[f] = make_session(str(f))
        except Exception as e:  # onnxruntime's own message: not ONNX, an unknown op, a damaged file
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"onnxruntime cannot load it: {first[:300]}", path=f, hint=WANTED) from None
    dec = sessions[decoder]
    inputs = {i.name: i for i in dec.get_inputs()}
    outputs = [o.name for o in dec.get_outputs()]
    missing = [n for n in DECODER_INPUTS if n not in inputs]
    missing_out = [n for n in DECODER_OUTPUTS if n not in outputs]
    if missing or missing_out or len(inputs) != len(DECODER_INPUTS):
        raise CheckpointError(
            f"the prompt decoder's inputs are ({', '.join(inputs)}) → ({', '.join(outputs)}); segpipe expects "
            f"segment-anything's ONNX layout ({', '.join(DECODER_INPUTS)}) → ({', '.join(DECODER_OUTPUTS)}, "
            "low_res_masks)", path=decoder, where="graph inputs" if missing or len(inputs) != 6 else "graph outputs",
            hint="export the decoder with segment-anything's scripts/export_onnx_model.py (SAM 2 exports are not run)")
    enc_in, enc_out = sessions[encoder].get_inputs(), sessions[encoder].get_outputs()
    shape = list(enc_in[0].shape) if len(enc_in) == 1 else []
    side = _static(shape[2]) if len(shape) == 4 else None
    if len(enc_in) != 1 or len(shape) != 4 or side is None or shape[3] != side or shape[1] != 3 or not enc_out:
        got = ", ".join(f"{i.name} {list(i.shape)}" for i in enc_in)
        raise CheckpointError(f"the image encoder's inputs are ({got}); segpipe expects one image (1, 3, S, S) "
                              "with a fixed side S, and the image embeddings as its first output", path=encoder,
                              where="graph inputs", hint=WANTED)
    emb = list(enc_out[0].shape)
    want = list(inputs["image_embeddings"].shape)
    if len(emb) != 4 or len(want) != 4 or any(_static(a) and _static(b) and a != b for a, b in zip(emb[1:], want[1:],
                                                                                                   strict=True)):
        raise CheckpointError(f"the encoder gives embeddings {emb} but the decoder ({decoder.name}) takes "
                              f"image_embeddings {want}: they are not one model's pair", path=encoder,
                              where="graph outputs", hint=WANTED)
    return SamInfo(folder, "onnx", side, encoder, decoder)


def load_sam(path: str | Path) -> tuple[Any, Any]:
    """Loads the model and its processor (on a worker).

    Returns:
        ``(SamModel or Sam2Model in eval mode, its processor)``.

    Raises:
        CheckpointError: not a SAM folder, or transformers cannot load it (one line).
    """
    info = read_sam(path)
    if info.model_type not in SAM_TYPES:
        raise CheckpointError("not a transformers SAM folder", path=info.path, hint=WANTED)
    import transformers  # lazy: transformers costs seconds to import; only the workers load models

    quiet()
    model_name, proc_name = SAM_TYPES[info.model_type]
    model_cls, proc_cls = getattr(transformers, model_name), getattr(transformers, proc_name)
    try:
        model = model_cls.from_pretrained(str(info.path), local_files_only=True, trust_remote_code=False).eval()
        if any((info.path / f).is_file() for f in ("processor_config.json", "preprocessor_config.json")):
            proc = proc_cls.from_pretrained(str(info.path), local_files_only=True, trust_remote_code=False)
        elif info.model_type == "sam":  # a bare model folder: the processor SAM's own export makes, sized to it
            size = info.image_size
            proc = proc_cls(image_processor=transformers.SamImageProcessor(
                size={"longest_edge": size}, pad_size={"height": size, "width": size}))
        else:  # SAM 2 resizes to the square side (no padding); masks come back a quarter of it
            size = info.image_size
            proc = proc_cls(image_processor=transformers.Sam2ImageProcessor(
                size={"height": size, "width": size}, mask_size={"height": size // 4, "width": size // 4}))
    except Exception as e:  # missing or mismatched weights, a config this version cannot read: one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"transformers cannot load it: {first[:300]}", path=info.path) from None
    return model, proc
