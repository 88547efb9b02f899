"""What model to run, as a small picklable reference that workers build the model from."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segpipe.errors import ConfigError, InputError
from segpipe.models import fetch
from segpipe.models.checkpoint import CheckpointMeta
from segpipe.models.sources import detect_source
from segpipe.models.sources.base import SourceOptions
from segpipe.models.sources.classes import file_count, is_table, resolve_classes
from segpipe.storage.location import is_url
from segpipe.storage.manifest import file_sha256


@dataclass(frozen=True)
class ModelRef:
    """What model to run: a model file or folder (any form :mod:`segpipe.models.sources` reads), local or
    in object storage (``s3://``, ``gs://``, ``az://``, ``https://``: :mod:`segpipe.models.fetch`), or
    ``ARCH:WEIGHTS`` from the local torchvision cache.

    Small and picklable: workers build the model from it (never from a pickled model). The driver reads
    the meta (:meth:`meta`) and each worker loads the model (:meth:`predictor`) through the same
    source, with the same options, so both see the same classes. A model URL is read from a copy in
    the process's private temporary folder; :meth:`pinned` records what the driver read (ETags, sizes,
    sha256), and a worker refuses a model whose objects changed since.

    Attributes:
        spec: A model file or folder, a model URL (a file, or a folder prefix), or ``ARCH:WEIGHTS``.
        arch: Architecture of a plain state dict (``--arch``: a registered name or
            ``package.module:function``).
        num_classes: ``--num-classes``: the class count where the weights cannot tell it.
        classes: ``--classes``: a labelmap.txt, a names.yaml / .json, or ``VOC`` / ``COCO`` /
            ``Cityscapes`` (:mod:`segpipe.models.sources.classes`).
        task: ``--task``: picks a universal model's output (Mask2Former); checked against the others'.
        pin: What a model URL named when the driver read it (:meth:`pinned`); None for a local model,
            or a URL not pinned yet (then pinned again wherever it is read).
    """

    spec: str
    arch: str | None = None
    num_classes: int | None = None
    classes: str | None = None
    task: str | None = None
    pin: fetch.ModelPin | None = None

    def is_checkpoint(self) -> bool:
        """True when ``spec`` names a file or folder, local or a URL (anything but ``ARCH:WEIGHTS``)."""
        return is_url(self.spec) or Path(self.spec).exists()

    def pinned(self) -> ModelRef:
        """This reference with its URL pinned: the objects copied here and their ETags, sizes and sha256
        recorded, so that workers load exactly these bytes (itself for a local model or one pinned).

        Raises:
            InputError: no such bucket or object, a prefix with no model, an ``https://`` folder.
        """
        if self.pin is not None or not is_url(self.spec):
            return self
        return self.replace(pin=fetch.pin(self.spec))

    def _pin(self) -> fetch.ModelPin:
        return self.pin if self.pin is not None else fetch.pin(self.spec)

    def _path(self, pin: fetch.ModelPin | None) -> Path:
        """The model's local path: ``spec``, or this process's copy of the pinned URL."""
        return Path(self.spec) if pin is None else fetch.local_copy(pin)

    def _options(self) -> Any:
        hint = None
        if self.classes is not None:
            hint = file_count(self.classes)  # a file's names say the count where the model does not
        task = None if self.task is None else str(getattr(self.task, "value", self.task))
        return SourceOptions(arch=self.arch, num_classes=self.num_classes, task=task, class_hint=hint)

    def _check(self) -> None:
        if self.num_classes is not None and self.num_classes < 1:
            raise ConfigError(f"--num-classes {self.num_classes} is not a class count >= 1")

    def source(self) -> Any:
        """The :class:`~segpipe.models.sources.ModelSource` that reads ``spec`` (None for ``ARCH:WEIGHTS``)."""
        if not self.is_checkpoint():
            return None
        if not is_url(self.spec):
            return detect_source(self.spec)
        pin = self._pin()
        with fetch.named(pin):
            return detect_source(self._path(pin))

    def fingerprint(self) -> str:
        """sha256 of the model's bytes (every file of a folder), ``arch``, ``num_classes`` and the classes.

        ``--classes`` counts by content (a file's bytes, a table's name). The task is not part of it: the
        run's config records the model's task. A reference with neither ``num_classes`` nor ``classes``
        keeps the digest of segpipe before they existed, so its stores resume.
        """
        more = "" if self.num_classes is None and self.classes is None else \
            "|" + json.dumps([self.num_classes, self._classes_digest()])
        if self.is_checkpoint():
            p = self._path(self._pin() if is_url(self.spec) else None)
            if p.is_dir():
                files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
                body = "|".join(f"{f.relative_to(p).as_posix()}:{file_sha256(f)}" for f in files)
            else:
                body = file_sha256(p)
            return hashlib.sha256(f"{body}|{self.arch}{more}".encode()).hexdigest()
        from segpipe.models.weights import weights_path  # lazy: torchvision's weight enums, ARCH:WEIGHTS only

        path = weights_path(self.spec)
        if not path.exists():
            from segpipe.models.weights import load_cached_state_dict  # lazy: as above

            load_cached_state_dict(self.spec)  # raises the one-line offline message
        return hashlib.sha256(f"{self.spec}|{file_sha256(path)}{more}".encode()).hexdigest()

    def _classes_digest(self) -> str | None:
        """What ``--classes`` names: a table's name, or the sha256 of the file's bytes."""
        if self.classes is None:
            return None
        if is_table(self.classes):
            return self.classes.lower()
        p = Path(self.classes)
        return file_sha256(p) if p.is_file() else self.classes

    def meta(self) -> Any:
        """The :class:`~segpipe.models.checkpoint.CheckpointMeta` of the model, ``--classes`` applied.

        Raises:
            SegpipeError: the model cannot be read, or the options do not fit it (one line).
        """
        self._check()
        if is_url(self.spec):
            pin = self._pin()
            with fetch.named(pin):
                path = self._path(pin)
                base = detect_source(path).read_meta(path, self._options())
        elif self.is_checkpoint():
            base = self.source().read_meta(Path(self.spec), self._options())
        else:
            base = self._weights_meta()
        return self.with_classes(base)

    def _weights_meta(self) -> Any:
        if ":" not in self.spec:
            raise InputError(
                "no such model file or folder, and not ARCH:WEIGHTS", path=self.spec,
                hint="pass a checkpoint made by `segpipe train`, a model file or folder, or e.g. "
                     "deeplabv3_resnet50:DEFAULT",
            )
        from segpipe.models.weights import resolve  # lazy: torchvision's weight enums, ARCH:WEIGHTS only

        w = resolve(self.spec)
        names = list(w.meta.get("categories") or [])
        cats = [{"index": i, "id": i, "name": n, "color": None, "isthing": True} for i, n in enumerate(names)]
        return CheckpointMeta.for_arch(self.spec.partition(":")[0], len(names), categories=cats)

    def with_classes(self, meta: Any) -> Any:
        """``meta`` with the categories of ``--classes`` (the meta itself without it).

        Raises:
            ConfigError: ``--classes`` does not fit the model (count, a landmark model) or is malformed.
        """
        if self.num_classes is not None and meta.num_classes != self.num_classes:
            raise ConfigError(f"--num-classes {self.num_classes}, but the model has {meta.num_classes} classes",
                              path=self.spec)
        if self.classes is None:
            return meta
        if meta.task == "landmarks":
            raise ConfigError("--classes names the classes of a semantic, instance or panoptic model; this one is "
                              "a landmarks model (its keypoints are named in its checkpoint)")
        cats = resolve_classes(self.classes, meta.num_classes)
        return CheckpointMeta.from_dict({**meta.to_dict(), "categories": cats}, path=self.classes)

    def load(self) -> tuple[Any, Any]:
        """Loads the model (on a worker): ``(nn.Module, CheckpointMeta with --classes applied)``."""
        self._check()
        if is_url(self.spec):
            pin = self._pin()
            try:
                with fetch.named(pin):
                    path = self._path(pin)
                    loaded = detect_source(path).load(path, self._options())
            finally:
                fetch.release(pin)  # the model holds what it read: the copy is not kept on a worker
            model, meta = loaded.model, self.with_classes(loaded.meta)
        elif self.is_checkpoint():
            loaded = self.source().load(Path(self.spec), self._options())
            model, meta = loaded.model, self.with_classes(loaded.meta)
        else:
            from segpipe.models.weights import build_with_weights  # lazy: torchvision, on workers only

            model, meta = build_with_weights(self.spec), self.meta()
        if hasattr(model, "set_categories"):  # a universal model fuses the classes --classes marks as stuff
            model.set_categories(meta.categories)
        return model, meta

    def predictor(self, **kw: Any) -> Any:
        """Builds the predictor (on a worker)."""
        from segpipe.models.predict import Predictor  # lazy: predictors run on workers; the driver needs the meta

        model, meta = self.load()
        return Predictor(model, meta, **kw)

    def replace(self, **changes: Any) -> ModelRef:
        """A copy with ``changes`` (a frozen dataclass's ``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)
