"""Label Studio through its REST API: ``segpipe push labelstudio`` and ``segpipe pull labelstudio``.

:mod:`.client` speaks HTTP (auth, retries); :mod:`.sync` pushes a store's pre-labels and pulls a
project's annotations.
"""

from __future__ import annotations

import os

from segpipe.integrations.labelstudio.client import LabelStudioClient, LabelStudioError

#: The environment variable holding the token when ``--token`` is not given (as the SDK reads it).
TOKEN_ENV = "LABEL_STUDIO_API_KEY"

__all__ = ["TOKEN_ENV", "LabelStudioClient", "LabelStudioError", "connect"]


def connect(url: str, token: str | None, *, timeout: float = 120.0, retries: int = 5) -> LabelStudioClient:
    """A client for ``url`` with ``token``, else ``$LABEL_STUDIO_API_KEY``.

    Raises:
        LabelStudioError: no token, or ``url`` is not an http(s) address.
    """
    token = token or os.environ.get(TOKEN_ENV, "")
    if not token.strip():
        raise LabelStudioError(f"no Label Studio token: pass --token or set {TOKEN_ENV}")
    return LabelStudioClient(url, token.strip(), timeout=timeout, retries=retries)
