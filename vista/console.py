"""What ``vista -q`` hides: progress bars (vista's, the Trainer's, transformers' and the Hub's).

tqdm reads ``TQDM_DISABLE`` when it is imported, and an explicit ``disable=False`` beats it, so setting the variable
after the libraries are imported does not hide a bar; :func:`progress` decides at call time instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

QUIET_ENV = "TQDM_DISABLE"  # tqdm's own switch: `vista -q` sets it, and a user may set it by hand


def quiet_console() -> bool:
    """True under ``vista -q`` (or with ``TQDM_DISABLE=1`` set by hand)."""
    return os.environ.get(QUIET_ENV, "").strip().lower() in ("1", "true", "yes")


def set_quiet() -> None:
    """Hide every progress bar of this process from now on (``vista -q``)."""
    os.environ[QUIET_ENV] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read by huggingface_hub and transformers at import
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # already imported: the variables came too late for them, so switch their bars off directly
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils.logging import disable_progress_bar

        disable_progress_bar()


def progress(iterable: Iterable | None = None, show: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar, hidden when ``show`` is False or under :func:`quiet_console`."""
    if not show or quiet_console():
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)
