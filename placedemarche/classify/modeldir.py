"""The model directory: :func:`save_model` and :func:`load_model`, with model.json checked
(keys, versions, checksum of the objects file, categories, extractors, classifier head) before
anything it describes is used. The objects are saved without pickle where they can be
(``classify.modelobjects``)."""

from __future__ import annotations

import json
import platform
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.core.files import sha256_file
from placedemarche.classify.finetune import FineTunedImageModel
from placedemarche.classify.blocks import Block
from placedemarche.classify.config import TrainConfig
from placedemarche.classify.model import ClassifierModel
from placedemarche.classify.modelobjects import PICKLE_FILE, SKOPS_FILE, read_objects, write_objects
from placedemarche.core.trusted import UntrustedTypeError

#: 2: the objects in model.skops (or model.joblib, named in ``files.objects``); 1: model.joblib.
MODEL_FORMAT = 2
READABLE_FORMATS = (1, 2)
MODEL_FILE = "model.json"
OBJECTS_FILE = SKOPS_FILE  # the objects file of a model with built-in plugins only
NETWORK_FILE = "finetuned.keras"


class ModelError(PlaceDeMarcheError):
    """A saved model directory cannot be used: missing, damaged, or from another version."""


class ModelWarning(UserWarning):
    """A saved model directory is usable but lacks a safeguard (e.g. saved before checksums)."""


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("placedemarche", "scikit-learn", "numpy", "scipy", "keras", "tensorflow", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def save_model(model: ClassifierModel, directory: str | Path) -> Path:
    """Write the model directory: model.json (config, categories, versions, metrics), the
    objects (extractors, scalers, heads, label encoder) and finetuned.keras. The objects go to
    model.skops, or to the pickle model.joblib when a third-party plugin holds a type skops
    cannot represent or placedemarche does not trust (model.json lists them under ``pickled``)."""
    from placedemarche.core.files import atomic_write_text

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    networks = {key: block.network for key, block in model.blocks.items() if block.network is not None}
    for network in networks.values():  # at most one: TrainConfig.check allows one fine-tuned backbone
        network.save(directory / NETWORK_FILE)
    objects = {
        "blocks": {key: Block(b.kind, b.spec, b.extractor, b.scaler, b.head, None)
                   for key, b in model.blocks.items()},
        "fusion_heads": model.fusion_heads,
        "label_encoder": model.label_encoder,
    }
    objects_file, pickled = write_objects(objects, directory)
    stale = directory / (PICKLE_FILE if objects_file == SKOPS_FILE else SKOPS_FILE)
    meta = {
        "format": MODEL_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": model.versions or library_versions(),
        "config": model.config.to_dict(),
        "categories": model.categories,
        "modalities": model.config.modalities,
        "extractors": {key: {"kind": b.kind, "spec": b.spec, "plugin": b.extractor.name,
                             "params": {k: repr(v) for k, v in b.extractor.get_params().items()},
                             "fine_tuned": b.network is not None}
                       for key, b in model.blocks.items()},
        "head": _head_meta(model.config.classifier),
        "files": {"objects": objects_file, **({"network": NETWORK_FILE} if networks else {})},
        # checked before loading: a damaged or swapped objects file is refused, not run
        "sha256": {objects_file: sha256_file(directory / objects_file)},
        **({"pickled": pickled} if pickled else {}),
        "default_group": model.group,
        "metrics": {k: v for k, v in model.metrics.items()
                    if k in ("mean", "results", "folds", "main", "best_group", "fusion_warning", "decision")},
    }
    atomic_write_text(directory / MODEL_FILE, json.dumps(meta, indent=2))
    stale.unlink(missing_ok=True)  # the other format, from an earlier save into this directory
    return directory


def _check_meta(meta: dict[str, Any], meta_path: Path) -> None:
    """model.json has every key, of the right type, before anything relies on it."""
    redo = "the file was edited or is damaged: restore it or train the model again"
    for key, kind in (("versions", dict), ("config", dict), ("categories", list), ("files", dict)):
        if key not in meta:
            raise ModelError(f"{meta_path} has no '{key}': {redo}")
        if not isinstance(meta[key], kind):
            raise ModelError(f"{meta_path}: '{key}' is a {type(meta[key]).__name__}, expected a "
                             f"{kind.__name__}: {redo}")
    for package, version in meta["versions"].items():
        if not isinstance(version, str):
            raise ModelError(f"{meta_path}: the {package} version is {json.dumps(version)}, expected a string "
                             f"such as \"1.2.0\": {redo}")
    if not all(isinstance(name, str) for name in meta["files"].values()):
        raise ModelError(f"{meta_path}: 'files' must map roles to file names: {redo}")
    categories = meta["categories"]
    if not all(isinstance(c, str) for c in categories) or len(set(categories)) != len(categories):
        raise ModelError(f"{meta_path}: 'categories' must be distinct strings: {redo}")
    checksums = meta.get("sha256", {})
    if not isinstance(checksums, dict) or not all(isinstance(v, str) for v in checksums.values()):
        raise ModelError(f"{meta_path}: 'sha256' must map file names to checksums: {redo}")
    if not isinstance(meta.get("default_group", ""), (str, type(None))):
        raise ModelError(f"{meta_path}: 'default_group' must be a string: {redo}")
    head = meta.get("head")  # absent from models saved before heads were plugins
    if head is not None and not (
            isinstance(head, dict) and all(isinstance(head.get(k), str) for k in ("spec", "plugin"))
            and isinstance(head.get("class", ""), str)
            and all(isinstance(head.get(k), (str, type(None))) for k in ("provider", "distribution"))):
        raise ModelError(f"{meta_path}: 'head' must describe the classifier head (spec, plugin, class, "
                         f"provider, distribution): {redo}")


def _head_meta(spec: str) -> dict[str, Any]:
    """What model.json records of the classifier head: its spec, its plugin and class, and
    the package that provides it (named in the error when it is missing at load time)."""
    from placedemarche.core.plugins import available_plugins, get_plugin_class, parse_plugin_spec

    cls = get_plugin_class("classifier", parse_plugin_spec(spec)[0])
    entry = next(e for e in available_plugins("classifier").values() if e.cls is cls)
    return {"spec": spec, "plugin": cls.name, "class": f"{cls.__module__}.{cls.__qualname__}",
            "provider": entry.provider, "distribution": entry.distribution}


def _check_head(meta: dict[str, Any], directory: Path) -> None:
    """The classifier head plugin the model was trained with is registered: else one line
    naming the package to install (before the pickle, which would fail on its class)."""
    from placedemarche.core.errors import UnknownPluginError
    from placedemarche.core.plugins import get_plugin_class

    head = meta.get("head")
    if not head:  # saved before heads were plugins: its heads are scikit-learn estimators
        return
    try:
        get_plugin_class("classifier", head["plugin"])
    except UnknownPluginError:
        package = _package_hint(head)
        raise ModelError(f"{directory} needs the classifier head '{head['plugin']}' from {package}, which is not "
                         f"installed: pip install {package} (or train the model again with another "
                         "--classifier)") from None


def _package_hint(head: dict[str, Any], module: str | None = None) -> str:
    """The distribution to install: the head's when ``module`` (a module that could not be
    imported) is the head's, else the distribution of ``module``."""
    from placedemarche.core.base import pip_name

    head_module = head.get("class", "").partition(".")[0]
    if module is None or module.partition(".")[0] == head_module:
        return head.get("distribution") or pip_name(head_module or head.get("plugin", "?"))
    return pip_name(module)


def _check_against_objects(meta: dict[str, Any], meta_path: Path, config: TrainConfig, objects: dict) -> None:
    """model.json describes the pickled model: same categories (in the label encoder's order,
    which is the heads' column order) and same extractors. An edited category list would
    otherwise name every prediction wrongly without an error."""
    redo = "model.json was edited or belongs to another model: restore it or train the model again"
    categories = list(meta["categories"])
    encoder = objects.get("label_encoder")
    classes = [str(c) for c in encoder.classes_] if encoder is not None else None
    if classes is not None and classes != categories:
        extra = [c for c in categories if c not in classes]
        lost = [c for c in classes if c not in categories]
        what = (f"lists {extra[0]!r}, unknown to the model" if extra
                else f"lacks {lost[0]!r}" if lost else "lists them in another order than the model")
        raise ModelError(f"{meta_path}: its categories do not match the model's ({len(categories)} vs "
                         f"{len(classes)}; it {what}): {redo}")
    expected = [key for key, _, _ in config.blocks]
    if sorted(objects["blocks"]) != sorted(expected):
        raise ModelError(f"{meta_path}: its extractors ({', '.join(expected)}) do not match the model's "
                         f"({', '.join(objects['blocks'])}): {redo}")
    group = meta.get("default_group")
    if group is not None and group not in config.groups:
        raise ModelError(f"{meta_path}: default_group '{group}' is not one of the model's groups "
                         f"({', '.join(config.groups)}): {redo}")


def load_model(directory: str | Path) -> ClassifierModel:
    """Load a model directory written by :func:`save_model`, checking it first.

    A model whose plugins are all built-in keeps its objects in ``model.skops``: it loads
    without unpickling, and only the types placedemarche trusts (``core.trusted``); a file naming
    any other type is refused with a :class:`ModelError`. A model with a third-party head or
    extractor that skops cannot represent, and every model saved before skops, keeps them in
    ``model.joblib``, a joblib (pickle) file, and **loading a pickle runs code**: load only such
    model directories if you trust them (trained by you or by someone you trust). A model.joblib
    of an older placedemarche loads with a :class:`ModelWarning` saying so. The sha256 checksum
    of the objects file, recorded in model.json at save time, is checked before loading: that
    catches a damaged or swapped file, not one replaced together with its model.json on purpose.

    A missing or damaged file, a model.json that does not match the model (categories,
    extractors, a missing key, a version that is not a string), or a model written by another
    placedemarche or scikit-learn major.minor version raises :class:`ModelError` with one
    line saying what to do; so does a classifier head (or any class of the pickle) whose
    plugin package is not installed, naming the package. A model saved before checksums were
    recorded loads with a :class:`ModelWarning`.
    """
    directory = Path(directory)
    meta_path = directory / MODEL_FILE
    if not directory.is_dir():
        raise ModelError(f"model directory not found: {directory}")
    if not meta_path.is_file():
        raise ModelError(f"{directory} is not a placedemarche model: {MODEL_FILE} is missing (train one with pm train)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{meta_path} is damaged ({type(exc).__name__}): train the model again") from None
    if meta.get("format") not in READABLE_FORMATS:
        raise ModelError(f"{directory}: model format {meta.get('format')!r}, this placedemarche reads "
                         f"formats {' and '.join(map(str, READABLE_FORMATS))}: train the model again")
    _check_meta(meta, meta_path)
    _check_head(meta, directory)
    try:
        config = TrainConfig.from_dict(meta["config"])
        config.check()
    except (TypeError, ValueError, PlaceDeMarcheError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{meta_path}: its config cannot be used ({reason}): the file was edited or is "
                         "damaged, restore it or train the model again") from None
    saved = meta["versions"]
    current = library_versions()
    for package in ("placedemarche", "scikit-learn"):
        if package in saved and package in current and _major_minor(saved[package]) != _major_minor(current[package]):
            raise ModelError(
                f"{directory} was saved with {package} {saved[package]}, this is {current[package]}: "
                f"retrain it with this version (or install {package}=={saved[package]})")
    if "network" in meta["files"] and "keras" in saved and "keras" in current \
            and saved["keras"].split(".")[0] != current["keras"].split(".")[0]:
        raise ModelError(f"{directory} was saved with keras {saved['keras']}, this is {current['keras']}: "
                         "retrain it with this version")
    objects_file = PICKLE_FILE if meta["format"] == 1 else meta["files"].get("objects")
    if objects_file not in (SKOPS_FILE, PICKLE_FILE):
        raise ModelError(f"{meta_path}: 'files' names the objects file {objects_file!r}, expected {SKOPS_FILE} "
                         f"or {PICKLE_FILE}: the file was edited or is damaged, restore it or train the model again")
    objects_path = directory / objects_file
    if not objects_path.is_file():
        raise ModelError(f"{directory}: {objects_file} is missing: the model directory is incomplete, train again")
    expected = meta.get("sha256", {}).get(objects_file)
    if expected is None:
        warnings.warn(f"{meta_path} records no checksum of {objects_file} (saved by an older placedemarche): "
                      "it is loaded unchecked; train the model again to add one", ModelWarning, stacklevel=2)
    elif sha256_file(objects_path) != expected:
        raise ModelError(f"{objects_path} does not match the checksum in {MODEL_FILE}: the file is damaged "
                         "or was replaced; train again or restore it")
    if meta["format"] == 1:
        warnings.warn(f"{objects_path} is a pickle saved by an older placedemarche: loading it runs code, so load "
                      "it only if you trust it; train the model again to save it without pickle",
                      ModelWarning, stacklevel=2)
    try:
        objects = read_objects(objects_path)
        blocks: dict[str, Block] = objects["blocks"]
        if not isinstance(blocks, dict):
            raise TypeError("blocks is not a dict")
    except UntrustedTypeError as exc:
        raise ModelError(f"{objects_path} is refused: {exc}; the file was edited or is damaged, train the "
                         "model again") from None
    except ModuleNotFoundError as exc:  # a plugin class of the pickle (head, extractor) is not installed
        package = _package_hint(meta.get("head") or {}, exc.name or "?")
        raise ModelError(f"{objects_path} needs the module '{exc.name}', which is not installed: "
                         f"pip install {package} (or train the model again)") from None
    except Exception as exc:  # unpickling (and skops) raise anything on a damaged file
        raise ModelError(f"{objects_path} cannot be read ({type(exc).__name__}): the file is damaged, "
                         "train the model again") from None
    _check_against_objects(meta, meta_path, config, objects)
    if "network" in meta["files"]:
        network_path = directory / meta["files"]["network"]
        if not network_path.is_file():
            raise ModelError(f"{directory}: {network_path.name} is missing: train the model again")
        key = next((k for k, e in meta.get("extractors", {}).items() if e.get("fine_tuned")), "image")
        try:
            blocks[key].network = FineTunedImageModel.load(blocks[key].extractor, network_path)
        except Exception as exc:
            raise ModelError(f"{network_path} cannot be read ({type(exc).__name__}): the file is damaged, "
                             "train the model again") from None
    fusion_heads = objects.get("fusion_heads")
    if fusion_heads is None:  # written before several extractors per modality: one text+image head
        fusion_heads = {"text+image": objects["fusion_head"]} if objects.get("fusion_head") is not None else {}
    return ClassifierModel(config, list(meta["categories"]), blocks, fusion_heads,
                           metrics=meta.get("metrics", {}), versions=saved,
                           default_group=meta.get("default_group"))
