"""The fitted objects of a model directory (extractors, scalers, heads, fusion heads, label
encoder): ``model.skops``, loaded without unpickling, or ``model.joblib``, a pickle kept only
for third-party plugins skops cannot represent safely and for models saved before skops.

``model.skops`` is written when every type it holds is trusted (``core.trusted``: the built-in
plugins, the model's blocks and scalers, scikit-learn/NumPy/SciPy); loading it never runs code
from the file. A pickle does, so :func:`read_objects` of a pickle is only as safe as the file:
its checksum is checked by the caller first. Pickles of models saved before the stage packages
name old module paths (``placedemarche.core.classify.blocks.Block``): they are mapped onto the
new modules by a fixed table (:data:`MOVED_MODULES`) while unpickling, nothing else is renamed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from placedemarche.classify.blocks import Block, BlockScaler
from placedemarche.classify.hierarchy import LevelHeads
from placedemarche.core.files import atomic_writer
from placedemarche.core.trusted import dumps_trusted, loads_trusted, type_name

SKOPS_FILE = "model.skops"
PICKLE_FILE = "model.joblib"

#: Project types a model's objects hold besides plugins (trusted in model.skops).
MODEL_TYPES = tuple(type_name(cls) for cls in (Block, BlockScaler, LevelHeads))

#: Modules moved by the stage-package layout, old -> new; a submodule of an old package maps
#: onto the same submodule of the new one (``placedemarche.core.classify.blocks`` ->
#: ``placedemarche.classify.blocks``). Used only when unpickling a model.joblib.
MOVED_MODULES = {
    "placedemarche.core.classify": "placedemarche.classify",
    "placedemarche.core.finetune": "placedemarche.classify.finetune",
    "placedemarche.core.catalog": "placedemarche.data.catalog",
    "placedemarche.core.datasets": "placedemarche.data.datasets",
    "placedemarche.core.collect": "placedemarche.data.collect",
    "placedemarche.core.http": "placedemarche.data.http",
    "placedemarche.core.images": "placedemarche.data.images",
    "placedemarche.core.text": "placedemarche.data.text",
    "placedemarche.core.features": "placedemarche.features.extraction",
    "placedemarche.core.cache": "placedemarche.features.cache",
    "placedemarche.core.store": "placedemarche.features.store",
    "placedemarche.core.extract": "placedemarche.features.driver",
    "placedemarche.core.engines": "placedemarche.features.engines",
    "placedemarche.core.inference": "placedemarche.features.inference",
    "placedemarche.core.model_assets": "placedemarche.features.model_assets",
    "placedemarche.core.metrics": "placedemarche.evaluate.metrics",
}


def moved_module(module: str) -> str:
    """``module`` as the layout names it now (unchanged when it did not move)."""
    for old, new in MOVED_MODULES.items():
        if module == old or module.startswith(old + "."):
            return new + module[len(old):]
    return module


def write_objects(objects: dict[str, Any], directory: Path) -> tuple[str, list[str]]:
    """Write ``objects`` into ``directory`` (atomically): the file name, and why it is a
    pickle (the types skops cannot represent or placedemarche does not trust; ``[]`` for skops)."""
    data, untrusted = dumps_trusted(objects, MODEL_TYPES)
    if data is not None:
        with atomic_writer(directory / SKOPS_FILE, "wb") as handle:
            handle.write(data)
        return SKOPS_FILE, []
    import joblib

    with atomic_writer(directory / PICKLE_FILE, "wb") as handle:
        joblib.dump(objects, handle)
    return PICKLE_FILE, untrusted


def read_objects(path: Path) -> dict[str, Any]:
    """The objects of ``path``: a skops file built only from trusted types
    (``core.trusted.UntrustedTypeError`` otherwise), or a joblib pickle, old module paths mapped."""
    if path.name == SKOPS_FILE:
        return loads_trusted(path.read_bytes(), MODEL_TYPES)
    return _load_pickle(path)


def _load_pickle(path: Path) -> Any:
    from joblib.numpy_pickle import NumpyUnpickler

    class MovedModulesUnpickler(NumpyUnpickler):
        def find_class(self, module: str, name: str):
            return super().find_class(moved_module(module), name)

    with open(path, "rb") as handle:
        try:
            unpickler = MovedModulesUnpickler(str(path), handle, ensure_native_byte_order=True)
        except TypeError:  # joblib before 1.5
            unpickler = MovedModulesUnpickler(str(path), handle)
        return unpickler.load()
