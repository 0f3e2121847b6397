"""Fitted objects saved without pickle: skops files that load only the types placedemarche trusts.

Loading a pickle runs whatever code the file names; a skops file (``skops.io``) is data, and
:func:`load_trusted` rebuilds it only when every type it names is on an explicit allow-list:
the classes of the built-in plugins that hold fitted state (extractors, classifier heads),
the project types a caller adds (a model's blocks and scalers), and the scikit-learn types
those hold beyond the ones skops trusts by default (NumPy arrays, SciPy sparse matrices and
scikit-learn estimators). Never ``trusted=True``: a type a file adds is refused, not trusted.

The tree types of random forests and histogram gradient boosting store node indices that
scikit-learn follows without bounds checks, and so do compressed sparse matrices; they are
trusted only after :func:`check_indices` found every index in range, so a crafted file
cannot make ``predict`` read outside its arrays or loop forever.

Usage::

    data = dumps_trusted(head)                       # None if skops cannot represent it safely
    head = loads_trusted(data)                       # UntrustedTypeError on a type not allowed
"""

from __future__ import annotations

from typing import Any, Iterable

from placedemarche.core.errors import PlaceDeMarcheError

#: Plugin kinds whose built-in classes hold fitted state saved with skops.
FITTED_KINDS = ("text", "image", "classifier")

#: scikit-learn types of the built-in heads that skops does not trust by default, and why
#: they may be: plain containers of arrays, except the types whose indices check_indices checks.
LIBRARY_TYPES = (
    "sklearn.calibration._CalibratedClassifier",  # linear-svm, svm: calibrated probabilities
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",  # mlp
    "sklearn.tree._tree.Tree",  # rf, bounds-checked
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",  # hist-gb, bounds-checked
    # the training rows of knn, the support vectors of svm, on sparse features; bounds-checked
    "scipy.sparse._csr.csr_matrix", "scipy.sparse._csc.csc_matrix",
    "scipy.sparse._csr.csr_array", "scipy.sparse._csc.csc_array",
)


class UntrustedTypeError(PlaceDeMarcheError):
    """A skops file names a type placedemarche does not trust, or a tree out of bounds."""


def type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def builtin_plugin_types() -> set[str]:
    """The classes registered by the built-in plugin modules for the kinds with fitted state."""
    from placedemarche.core.plugins import DEFAULT_PLUGINS, available_plugins

    return {type_name(entry.cls) for kind in FITTED_KINDS for entry in available_plugins(kind).values()
            if entry.cls.__module__ in DEFAULT_PLUGINS}


def trusted_types(extra: Iterable[str] = ()) -> list[str]:
    """The allow-list :func:`loads_trusted` passes to skops (besides skops' own defaults)."""
    return sorted(builtin_plugin_types() | set(LIBRARY_TYPES) | set(extra))


def untrusted_types(data: bytes, extra: Iterable[str] = ()) -> list[str]:
    """The types named in a skops file that are not on the allow-list."""
    import skops.io

    return sorted(set(skops.io.get_untrusted_types(data=data)) - set(trusted_types(extra)))


def dumps_trusted(obj: Any, extra: Iterable[str] = ()) -> tuple[bytes | None, list[str]]:
    """``obj`` as a skops file and ``[]``, or ``None`` and why not: the types that are not
    trusted (a third-party plugin), or the type skops cannot represent."""
    import skops.io
    from skops.io.exceptions import UnsupportedTypeException

    try:
        data = skops.io.dumps(obj)
    except (UnsupportedTypeException, TypeError) as exc:
        return None, [str(exc).splitlines()[0] if str(exc) else type(exc).__name__]
    untrusted = untrusted_types(data, extra)
    return (None, untrusted) if untrusted else (data, [])


def loads_trusted(data: bytes, extra: Iterable[str] = ()) -> Any:
    """The object of a skops file, built only from allowed types, its trees bounds-checked.
    Raises :class:`UntrustedTypeError` naming the first type refused."""
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        obj = skops.io.loads(data, trusted=trusted_types(extra))
    except UntrustedTypesFoundException:
        untrusted = untrusted_types(data, extra) or ["?"]
        raise UntrustedTypeError(f"it names the type {untrusted[0]}, which placedemarche does not trust"
                                 + (f" (and {len(untrusted) - 1} more)" if len(untrusted) > 1 else "")) from None
    check_indices(obj)
    return obj


def check_indices(obj: Any) -> None:
    """Every scikit-learn tree reachable from ``obj`` has its child and feature indices in
    range and children after their parent (no cycle), every compressed sparse matrix its
    column (row) indices. Raises :class:`UntrustedTypeError`."""
    seen: set[int] = set()
    stack: list[tuple[Any, int | None]] = [(obj, None)]
    while stack:
        item, n_features = stack.pop()
        if id(item) in seen or item is None or isinstance(item, (str, bytes, int, float, bool)):
            continue
        seen.add(id(item))
        name = type_name(type(item))
        if name == "sklearn.tree._tree.Tree":
            _check_tree(item, n_features)
            continue
        if name == "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor":
            _check_predictor(item, n_features)
            continue
        if name.startswith("scipy.sparse."):
            _check_sparse(item)
            continue
        if isinstance(item, dict):
            stack.extend((value, n_features) for value in item.values())
        elif isinstance(item, (list, tuple, set)):
            stack.extend((value, n_features) for value in item)
        elif hasattr(item, "__dict__"):
            n = getattr(item, "n_features_in_", n_features)
            stack.extend((value, n if isinstance(n, int) else n_features) for value in vars(item).values())
        elif type(item).__module__ == "numpy" and getattr(item, "dtype", None) is not None \
                and item.dtype == object:
            stack.extend((value, n_features) for value in item.ravel())


def _check_sparse(matrix) -> None:
    if not hasattr(matrix, "check_format"):  # not a compressed format: no index it follows unchecked
        return
    try:
        matrix.check_format(full_check=True)
    except (ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UntrustedTypeError(f"its sparse matrix is inconsistent ({reason}): a damaged or crafted file") from None


def _in_order(left, right, leaf, features, n_features: int | None, where: str) -> None:
    import numpy as np

    n = len(left)
    index = np.arange(n)
    inner = ~leaf
    children_ok = np.all((left[inner] > index[inner]) & (left[inner] < n)
                         & (right[inner] > index[inner]) & (right[inner] < n))
    limit = n_features if n_features is not None else np.iinfo(np.int64).max
    features_ok = np.all((features[inner] >= 0) & (features[inner] < limit))
    if not (children_ok and features_ok):
        raise UntrustedTypeError(f"its {where} has node indices out of range (a damaged or crafted file)")


def _check_tree(tree, n_features: int | None) -> None:
    import numpy as np

    left, right = np.asarray(tree.children_left), np.asarray(tree.children_right)
    if len(left) != tree.node_count or len(right) != tree.node_count or len(tree.feature) != tree.node_count:
        raise UntrustedTypeError("its decision tree has arrays of the wrong length (a damaged or crafted file)")
    limit = min(n for n in (n_features, tree.n_features) if n is not None)
    _in_order(left, right, left == -1, np.asarray(tree.feature), limit, "decision tree")


def _check_predictor(predictor, n_features: int | None) -> None:
    import numpy as np

    nodes = predictor.nodes
    leaf = nodes["is_leaf"].astype(bool)
    _in_order(nodes["left"].astype(np.int64), nodes["right"].astype(np.int64), leaf,
              nodes["feature_idx"].astype(np.int64), n_features, "gradient-boosting tree")
    categorical = nodes["is_categorical"].astype(bool) & ~leaf
    bitsets = len(getattr(predictor, "raw_left_cat_bitsets", ()))
    if categorical.any() and not np.all((nodes["bitset_idx"][categorical] >= 0)
                                        & (nodes["bitset_idx"][categorical] < bitsets)):
        raise UntrustedTypeError("its gradient-boosting tree has category indices out of range "
                                 "(a damaged or crafted file)")
