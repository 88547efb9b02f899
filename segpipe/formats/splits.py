"""Split names as the common loaders expect them (shared by the COCO, VOC and Cityscapes writers).

The loaders people use take a split by name and accept only a few: torchvision's ``VOCSegmentation``
wants ``train``, ``val`` or ``trainval``, its ``Cityscapes`` wants ``train``, ``val`` or ``test``, and
detectron2 / Datumaro register COCO splits from ``instances_<split>.json``. Datumaro's own name for
"no split", ``default``, is accepted by none of them. So a writer puts:

* an image without a split (or with Datumaro's ``default``) in ``train``: a dataset that was never
  split is the data one trains on, and it is the split every loader takes by default;
* the common aliases under their canonical name (``valid``/``validation`` → ``val``,
  ``training`` → ``train``, ``testing`` → ``test``);
* any other split under its own name (a user who named it knows it).

Writers keep the image's original split in their sidecar, so segpipe reads back what it was given.
"""

from __future__ import annotations

from segpipe.errors import ConfigError, FormatError
from segpipe.storage.paths import check_relative_name

#: The split an image without one is written to.
NO_SPLIT_NAME = "train"
#: Split names that mean "no split" (Datumaro writes ``default``).
NO_SPLIT = frozenset({"", "default"})
#: Aliases of the canonical split names (compared lower-cased).
ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def loader_split(split: str | None) -> str:
    """The split folder or file name an image is written under (rules in the module docstring).

    Args:
        split: The image's own split, or None.

    Returns:
        A split name that is one path component.

    Raises:
        FormatError: the split cannot be a file or folder name (``a/b``, ``..``).
    """
    if split is None or split.strip().lower() in NO_SPLIT:
        return NO_SPLIT_NAME
    name = ALIASES.get(split.strip().lower(), split)
    checked = check_relative_name(name, where="split")
    if "/" in checked or checked == ".":
        raise FormatError(f"split {split!r} cannot be a file or folder name", where="split")
    return checked


#: Targets with more than one layout (``--layout``); each writer checks the value and names the choices.
LAYOUT_TARGETS = ("coco", "voc")


def layout_option(layout: str | None, to: str) -> dict[str, str]:
    """The writer options for ``--layout``: ``{}`` when it is not given.

    Raises:
        ConfigError: ``--layout`` for a target that has a single layout.
    """
    if layout is None:
        return {}
    if to not in LAYOUT_TARGETS:
        raise ConfigError(f"--layout applies to --to {' or '.join(LAYOUT_TARGETS)}, not {to!r}")
    return {"layout": layout}
