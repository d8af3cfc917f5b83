"""How weight loading reports: quietly, and with a one-line error for a file it cannot read (a leaf module)."""

from __future__ import annotations

import warnings
from contextlib import contextmanager

from ..errors import SgeoError, one_line


@contextmanager
def weights_errors(what: str):
    """A weight file that cannot be read (a pickle that weights_only refuses, a cut or corrupt file) is one
    line naming what failed, not a traceback."""
    import pickle

    from safetensors import SafetensorError

    try:
        yield
    except SgeoError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, pickle.UnpicklingError, SafetensorError) as error:
        detail = one_line(error, 200, first=True)
        raise SgeoError(
            f"cannot load {what}: {type(error).__name__}: {detail}; replace the damaged file"
        ) from None


@contextmanager
def quiet_loading():
    """Loading known layouts is not news: no per-file progress bars, no reports of the keys a layout leaves
    unused on purpose (CLIP's text tower, LLaVA's vision tower), no deprecation chatter of old configs."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message="Could not find a config file")  # peft, base model
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
