"""The abstract plugin classes: scikit-learn style extractors, reducers, clusterers, classifier
heads, and sources; capabilities are class attributes the core reads (``accepts_sparse``, ...).

scikit-learn itself is not imported here: ``import sklearn.base`` costs over a second
(it pulls in scipy.stats and pandas), and listing plugins must stay instant. The classes
below implement the estimator protocol scikit-learn relies on (``get_params``,
``set_params``, ``fit`` returning self, ``fit_transform``, ``__sklearn_tags__``), so
``clone``, ``Pipeline``, ``cross_val_score`` and grid search accept them unchanged, and the
built-in reducers, clusterers and classifier heads pass ``sklearn.utils.estimator_checks``
(tests/test_estimator_checks.py). The helpers that make this so, ``_validate_data`` and
``_check_fitted``, import scikit-learn when they are called, never at import time.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import weakref
from importlib import metadata
from typing import Any, ClassVar, Iterator

from placedemarche.core.errors import MissingDependencyError, PluginConfigError


#: Import names whose PyPI distribution is named differently. Consulted after the
#: environment's metadata, which only knows the distributions that are installed.
KNOWN_DISTRIBUTIONS = {
    "cv2": "opencv-python-headless",
    "sklearn": "scikit-learn",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "skimage": "scikit-image",
    "umap": "umap-learn",
    "sentence_transformers": "sentence-transformers",
    "tensorflow_hub": "tensorflow-hub",
    "bs4": "beautifulsoup4",
    "dateutil": "python-dateutil",
}


@functools.lru_cache(maxsize=1)
def _installed_distributions() -> dict[str, list[str]]:
    # Scans every installed distribution's metadata: only done when a hint is needed.
    return metadata.packages_distributions()


def pip_name(module: str) -> str:
    """The distribution to ``pip install`` for an import name (``sklearn`` -> ``scikit-learn``)."""
    top = module.partition(".")[0]
    installed = _installed_distributions().get(top)
    if installed:
        return installed[0]
    return KNOWN_DISTRIBUTIONS.get(top, top)


#: The distribution that registered each plugin class, recorded by the plugin manager when it
#: collects a hook's registrations (the manager sits above this module, so it fills this in).
_PROVIDED_BY: "weakref.WeakKeyDictionary[type, str]" = weakref.WeakKeyDictionary()


def record_provider(cls: type, distribution: str | None) -> None:
    """Remember which distribution registered ``cls``: its extras install the plugin's needs."""
    if distribution:
        _PROVIDED_BY[cls] = distribution


def provided_by(cls: type) -> str | None:
    """The distribution that registered ``cls`` (``placedemarche`` for a built-in used directly)."""
    if cls in _PROVIDED_BY:
        return _PROVIDED_BY[cls]
    return "placedemarche" if cls.__module__.split(".")[0] == "placedemarche" else None


def __getattr__(name: str):
    # NotFittedError subclasses scikit-learn's, which only exists once sklearn is imported:
    # built on first use (PEP 562), so it pickles by reference like any module-level class.
    if name == "NotFittedError":
        return _not_fitted_error()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.lru_cache(maxsize=1)
def _not_fitted_error() -> type:
    """A plugin used before ``fit``: a PluginConfigError (one line for the CLI) and
    scikit-learn's NotFittedError (what its checks and meta-estimators expect)."""
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    return type("NotFittedError", (PluginConfigError, SklearnNotFittedError), {"__module__": __name__})


class PluginBase:
    """What every plugin class declares: a name, a description, and what it needs installed.

    Subclasses set ``name`` (unique within their kind), ``description`` (one line),
    ``requires`` (importable module names, checked without importing them) and ``extra``
    (the pip extra, of the package providing the plugin, that installs them; without one,
    the install hint names the distributions of the missing modules). ``aliases`` are other
    names the plugin can be looked up by. Configuration is passed to ``__init__`` as keyword
    arguments with defaults and stored under the same names.
    ``transient`` names attributes (loaded networks, sessions) that are rebuilt on demand
    and left out when the plugin is pickled, e.g. inside a saved classifier.
    """

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    transient: ClassVar[tuple[str, ...]] = ()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self.transient}

    # -- availability, without importing anything heavy -------------------------------
    @classmethod
    def missing_dependencies(cls) -> list[str]:
        missing = []
        for module in cls.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                missing.append(module)
        return missing

    @classmethod
    def is_available(cls) -> bool:
        return not cls.missing_dependencies()

    @classmethod
    def install_hint(cls) -> str:
        """The pip command that installs what is missing: the providing package's extra
        (``pip install "theirpackage[gpu]"``), else the distributions of the missing modules."""
        if cls.extra:
            distribution = provided_by(cls)
            if distribution:
                return f'pip install "{distribution}[{cls.extra}]"'
        return "pip install " + " ".join(dict.fromkeys(pip_name(m) for m in cls.missing_dependencies()))

    @classmethod
    def require(cls) -> None:
        """Raise a MissingDependencyError naming the pip extra if a dependency is missing."""
        missing = cls.missing_dependencies()
        if missing:
            raise MissingDependencyError(
                f"plugin '{cls.name}' needs {', '.join(missing)}: {cls.install_hint()}"
            )

    # -- the scikit-learn estimator protocol ---------------------------------------------
    @classmethod
    def _get_param_names(cls) -> list[str]:
        init = cls.__init__
        if init is object.__init__:
            return []
        params = inspect.signature(init).parameters.values()
        return sorted(
            p.name
            for p in params
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any):
        valid = self._get_param_names()
        for key, value in params.items():
            if key not in valid:
                raise PluginConfigError(
                    f"plugin '{self.name}' has no parameter '{key}'; "
                    f"valid parameters: {', '.join(valid) or '(none)'}"
                )
            setattr(self, key, value)
        return self

    def __sklearn_tags__(self):
        from sklearn.utils import InputTags, Tags, TargetTags

        return Tags(
            estimator_type=None,
            target_tags=TargetTags(required=False),
            input_tags=InputTags(sparse=bool(getattr(self, "accepts_sparse", False))),
        )

    def _validate_data(self, X, y="no_validation", *, reset: bool = True, **check_params):
        """scikit-learn's input validation: a 2-D finite numeric array (sparse only if the
        class ``accepts_sparse``), ``n_features_in_`` recorded when ``reset`` (in ``fit``) and
        checked otherwise; ``(X, y)`` when ``y`` is given. Arrays are not copied or cast
        beyond what that needs (float32 stays float32, CSR stays CSR)."""
        from sklearn.utils.validation import validate_data

        check_params.setdefault("accept_sparse", bool(getattr(self, "accepts_sparse", False)))
        return validate_data(self, X, y, reset=reset, **check_params)

    def _check_fitted(self, *attributes: str, before: str = "transform") -> None:
        """Raise :class:`NotFittedError` unless ``fit`` has run (``attributes``, or any
        attribute ending in ``_``, is set); ``before`` names the method called too early."""
        from sklearn.exceptions import NotFittedError as SklearnNotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(self, list(attributes) or None)
        except SklearnNotFittedError:
            raise _not_fitted_error()(
                f"{self.name or type(self).__name__}: call fit (or fit_transform) before {before}"
            ) from None

    def __repr__(self) -> str:
        defaults = {
            p.name: p.default
            for p in inspect.signature(type(self).__init__).parameters.values()
            if p.default is not p.empty
        }
        changed = [
            f"{k}={v!r}" for k, v in self.get_params().items() if defaults.get(k, object()) != v
        ]
        return f"{type(self).__name__}({', '.join(changed)})"

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Raise a PluginConfigError naming the parameters ``__init__`` does not accept."""
        valid = cls._get_param_names()
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise PluginConfigError(
                f"plugin '{cls.name}' has no parameter {', '.join(map(repr, unknown))}; "
                f"valid parameters: {', '.join(valid) or '(none)'}"
            )

    @classmethod
    def create(cls, **params: Any):
        """Instantiate with a clear error for unknown parameters (used by name lookups)."""
        cls.check_params(params)
        return cls(**params)


class _Transformer(PluginBase):
    """fit / transform / fit_transform, scikit-learn style."""

    #: True when ``fit`` learns from the data (a vocabulary, visual words, word vectors):
    #: such extractors must be fitted on training folds only.
    learns_from_data: ClassVar[bool] = False

    def fit(self, X, y=None):
        return self

    def transform(self, X):  # pragma: no cover - abstract
        raise NotImplementedError

    def fit_transform(self, X, y=None):
        return self.fit(X, y).transform(X)

    def __sklearn_tags__(self):
        from sklearn.utils import TransformerTags

        tags = super().__sklearn_tags__()
        tags.transformer_tags = TransformerTags()
        if self.kind in ("text", "image"):  # extractors take a list of texts or image paths
            tags.input_tags.two_d_array = False
            tags.input_tags.string = True
            tags.requires_fit = self.learns_from_data
        return tags


class TextExtractor(_Transformer):
    """Turns a sequence of texts into a feature matrix ``(n_texts, n_features)``.

    ``transform`` returns a numpy array or a scipy sparse matrix.
    """

    kind = "text"


class ImageExtractor(_Transformer):
    """Turns a sequence of image paths into a feature matrix ``(n_images, n_features)``.

    Implementations raise :class:`~placedemarche.core.errors.ImageReadError` naming the
    file when an image cannot be decoded.
    """

    kind = "image"


class Reducer(_Transformer):
    """Reduces a feature matrix to ``n_components`` columns (PCA, SVD, t-SNE, ...).

    ``accepts_sparse``: the reducer works on a scipy sparse matrix (TF-IDF, bag of words)
    without densifying it. The evaluator gives any other reducer the matrix's truncated SVD
    (LSA, 100 dimensions) instead. The evaluator only calls ``fit_transform``, so a reducer
    that cannot place new points may leave ``transform`` out, as t-SNE does.
    """

    kind = "reducer"
    accepts_sparse: ClassVar[bool] = False


class Clusterer(PluginBase):
    """Groups the rows of a feature matrix: ``fit_predict(X) -> labels`` (one int per row).

    ``needs_n_clusters``: the clusterer takes ``n_clusters`` (the evaluator passes the number
    of categories unless told otherwise); False for methods that find their own number
    (HDBSCAN). ``accepts_sparse``: it may be given a scipy sparse matrix (else the evaluator
    gives it a dense one). A label of ``-1`` marks noise (points in no cluster). Seeded
    methods take ``random_state``, which the evaluator sets per seed.
    """

    kind = "clusterer"
    needs_n_clusters: ClassVar[bool] = True
    accepts_sparse: ClassVar[bool] = False

    def fit(self, X, y=None):
        self.labels_ = self.fit_predict(X)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = "clusterer"
        return tags

    def fit_predict(self, X, y=None):  # pragma: no cover - abstract
        raise NotImplementedError


class Classifier(PluginBase):
    """A classifier head on a block of features: ``fit(X, y)``, ``predict_proba(X)``.

    scikit-learn conventions: ``classes_`` after ``fit``, probabilities with one column per
    class in that order, ``predict`` the most probable class. Heads are pickled inside saved
    models: keep loaded resources in attributes listed in ``transient``. ``accepts_sparse``
    says whether ``X`` may be a scipy sparse matrix (else the classifier gets a dense one);
    ``accepts_nan`` whether it may hold NaN (missing values), as tree ensembles allow. The
    ``fit`` and ``predict_proba`` below validate ``X`` the scikit-learn way (``n_features_in_``,
    a clear error for the wrong number of features, for an unfitted head or for sparse input
    a dense-only head cannot take).
    """

    kind = "classifier"
    accepts_sparse: ClassVar[bool] = True
    accepts_nan: ClassVar[bool] = False

    def make_estimator(self, X, y):
        """The unfitted scikit-learn classifier this head wraps (it may depend on the training
        data: calibration folds, neighbours). A head that implements this needs no ``fit`` or
        ``predict_proba``; others override those two instead."""
        raise NotImplementedError(f"{type(self).__name__}: implement make_estimator, or fit and predict_proba")

    def fit(self, X, y):
        X, y = self._validate_data(X, y, ensure_all_finite="allow-nan" if self.accepts_nan else True)
        self.estimator_ = self.make_estimator(X, y).fit(X, y)
        self.classes_ = self.estimator_.classes_
        if hasattr(self.estimator_, "n_iter_"):  # iterative solvers: how many iterations ran
            self.n_iter_ = self.estimator_.n_iter_
        return self

    def predict_proba(self, X):
        self._check_fitted("estimator_", before="predict_proba")
        X = self._validate_data(X, reset=False, ensure_all_finite="allow-nan" if self.accepts_nan else True)
        return self.estimator_.predict_proba(X)

    def predict(self, X):
        import numpy as np

        self._check_fitted("classes_", before="predict")
        return np.asarray(self.classes_)[np.argmax(self.predict_proba(X), axis=1)]

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags

        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier"
        tags.classifier_tags = ClassifierTags()
        tags.target_tags.required = True
        tags.input_tags.allow_nan = self.accepts_nan
        return tags


class Source(PluginBase):
    """Yields product records for a query, page by page; never writes files.

    The contract:

    - ``pages(query, start_page)`` yields :class:`SourcePage` objects in order, starting at
      ``start_page`` (1-based), and stops after the last one. A source fetches a page only
      when the previous one has been consumed, so the core writes each page before the next
      request; a failure on page N keeps pages 1..N-1 and a later run resumes at page N.
    - Records are flat dicts of JSON values (str, numbers, lists); a missing field is ``""``.
    - ``columns`` maps each column of the study's output (``foodId, label, category,
      foodContentsLabel, image``) to the record key that fills it; ``record_keys`` lists the
      other keys a record has, so ``--fields`` can be checked before anything is fetched.
    - Failures raise :class:`~placedemarche.core.errors.SourceError` with a one-line message
      (``"openfoodfacts page 3: HTTP 500 from ..."``); ``check()`` raises it before anything
      is written when the source cannot run at all (missing credentials).
    - ``retries()`` and ``waited()`` report the HTTP retries and the seconds spent waiting
      (rate limit, backoff) for the run's summary.

    The core (:func:`placedemarche.data.collect.collect`) does the writing, the limit, the
    resume, image downloads and progress.

    Usage::

        class MySource(Source):
            name = "mysource"
            description = "Products from my API"
            columns = {"foodId": "id", "label": "title", "category": "type",
                       "foodContentsLabel": "ingredients", "image": "picture"}

            def pages(self, query, start_page=1):
                yield SourcePage(1, [{"id": "1", "title": query}], total=1, last=True)
    """

    kind = "source"
    columns: ClassVar[dict[str, str]] = {}
    record_keys: ClassVar[tuple[str, ...]] = ()

    def pages(self, query: str, start_page: int = 1) -> Iterator["SourcePage"]:
        raise NotImplementedError  # pragma: no cover - abstract

    def check(self) -> None:
        """Raise SourceError before anything is written if the source cannot run (credentials)."""

    def retries(self) -> int:
        """HTTP retries spent so far (for the summary)."""
        return 0

    def waited(self) -> float:
        """Seconds spent waiting for the rate limit and retry backoff so far."""
        return 0.0


class SourcePage:
    """One page of results: its number, its records, the total the API announced (or None),
    and whether it is the last one."""

    def __init__(self, number: int, records: list[dict[str, Any]], total: int | None = None,
                 last: bool = False):
        self.number = number
        self.records = records
        self.total = total
        self.last = last

    def __repr__(self) -> str:
        return f"SourcePage({self.number}, {len(self.records)} records, total={self.total}, last={self.last})"
