"""Small shims around diffusers/transformers loading: the dtype keyword and quiet progress bars."""

from __future__ import annotations

import contextlib


def dtype_kwarg(dtype) -> dict:
    """The from_pretrained keyword for a torch dtype: ``dtype`` in diffusers that renamed it, else
    ``torch_dtype`` (diffusers >= 0.32 is allowed by requirements.txt; 0.42 warns on the old name)."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  present once renamed
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


@contextlib.contextmanager
def quiet_progress():
    """No tqdm bars from diffusers/transformers while loading or saving (they would fill worker logs)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    d_on, t_on = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if d_on:
            dlog.enable_progress_bar()
        if t_on:
            tlog.enable_progress_bar()
