"""The plugin manager: built-ins and entry-point plugins, registered through the same hooks.

Third-party packages declare ``[project.entry-points.placedemarche]``. ``PM_LOAD_PLUGINS``
(comma-separated entry-point names) restricts which of them load; set it to an empty string
to load built-ins only. A plugin that fails to import or to register is recorded in
:func:`plugin_failures` and shown by ``pm plugins``; it never breaks another command.
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib
import os
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Iterable, Mapping

import pluggy

from placedemarche.core import hookspecs
from placedemarche.core.base import PluginBase, record_provider
from placedemarche.core.errors import PlaceDeMarcheError, PluginConfigError, UnknownPluginError

ENTRY_POINT_GROUP = "placedemarche"

#: Built-in plugin modules. They get no privilege a third-party plugin lacks, except that
#: they register first, so a third-party plugin cannot silently replace one of them.
DEFAULT_PLUGINS = (
    "placedemarche.plugins.text.bow",
    "placedemarche.plugins.text.tfidf",
    "placedemarche.plugins.text.word2vec",
    "placedemarche.plugins.text.bert",
    "placedemarche.plugins.text.use",
    "placedemarche.plugins.image.sift",
    "placedemarche.plugins.image.keras_cnn",
    "placedemarche.plugins.image.efficientnet_lite",
    "placedemarche.plugins.reducers.pca",
    "placedemarche.plugins.reducers.svd",
    "placedemarche.plugins.reducers.tsne",
    "placedemarche.plugins.reducers.umap",
    "placedemarche.plugins.clusterers.kmeans",
    "placedemarche.plugins.clusterers.agglomerative",
    "placedemarche.plugins.clusterers.gmm",
    "placedemarche.plugins.clusterers.spectral",
    "placedemarche.plugins.clusterers.hdbscan",
    "placedemarche.plugins.classifiers.logreg",
    "placedemarche.plugins.classifiers.linear_svm",
    "placedemarche.plugins.classifiers.svm",
    "placedemarche.plugins.classifiers.random_forest",
    "placedemarche.plugins.classifiers.knn",
    "placedemarche.plugins.classifiers.mlp",
    "placedemarche.plugins.classifiers.hist_gb",
    "placedemarche.plugins.sources.openfoodfacts",
    "placedemarche.plugins.sources.edamam",
)

#: kind -> (hook name, human name used in messages)
KINDS = {
    "text": ("register_text_extractors", "text extractor"),
    "image": ("register_image_extractors", "image extractor"),
    "reducer": ("register_reducers", "reducer"),
    "source": ("register_sources", "source"),
    "clusterer": ("register_clusterers", "clusterer"),
    "classifier": ("register_classifiers", "classifier head"),
}


@dataclass(frozen=True)
class PluginFailure:
    """A plugin module that could not be imported, or whose registration hook raised."""

    plugin: str
    error: str


@dataclass(frozen=True)
class RegisteredPlugin:
    """A plugin class, the package that provides it, and that package's installed
    distribution when there is one (None for plugins registered at run time)."""

    cls: type[PluginBase]
    provider: str
    distribution: str | None = None


@dataclass
class _State:
    manager: pluggy.PluginManager | None = None
    providers: dict[str, str] = field(default_factory=dict)  # plugin name -> provider shown
    distributions: dict[str, str] = field(default_factory=dict)  # plugin name -> distribution
    failures: list[PluginFailure] = field(default_factory=list)
    registries: dict[str, dict[str, RegisteredPlugin]] = field(default_factory=dict)
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)


_state = _State()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the plugin manager, loading built-in and entry-point plugins on first use."""
    if _state.manager is None:
        manager = pluggy.PluginManager("placedemarche")
        manager.add_hookspecs(hookspecs)
        _state.manager = manager
        _load_builtins(manager)
        _load_entry_points(manager)
    return _state.manager


def _load_builtins(manager: pluggy.PluginManager) -> None:
    for module_name in DEFAULT_PLUGINS:
        try:
            module = importlib.import_module(module_name)
            manager.register(module, name=module_name)
            _state.providers[module_name] = "placedemarche"
            _state.distributions[module_name] = "placedemarche"
        except Exception as exc:  # a broken built-in is reported like any plugin
            _state.failures.append(PluginFailure(module_name, _one_line(exc)))


def _load_entry_points(manager: pluggy.PluginManager) -> None:
    wanted = os.environ.get("PM_LOAD_PLUGINS")
    allowed = None if wanted is None else {n.strip() for n in wanted.split(",") if n.strip()}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allowed is not None and ep.name not in allowed:
            continue
        if manager.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
            manager.register(plugin, name=ep.name)
            _state.providers[ep.name] = ep.dist.name if ep.dist else ep.value
            if ep.dist:
                _state.distributions[ep.name] = ep.dist.name
        except Exception as exc:
            _state.failures.append(PluginFailure(ep.name, _one_line(exc)))


def register_plugin(plugin: Any, name: str | None = None, provider: str = "(registered at run time)") -> str:
    """Register a plugin object (a module or class with hookimpls) at run time; used by tests."""
    manager = get_plugin_manager()
    registered = manager.register(plugin, name=name)
    _state.providers[registered] = provider
    _state.registries.clear()
    _state.aliases.clear()
    return registered


def unregister_plugin(name: str) -> None:
    get_plugin_manager().unregister(name=name)
    _state.providers.pop(name, None)
    _state.distributions.pop(name, None)
    _state.registries.clear()
    _state.aliases.clear()


def reset_plugins() -> None:
    """Forget every loaded plugin; the next lookup loads them again (tests, env changes)."""
    global _state
    _state = _State()


def _collect(kind: str) -> None:
    hook_name, human = KINDS[kind]
    manager = get_plugin_manager()
    registry: dict[str, RegisteredPlugin] = {}
    aliases: dict[str, str] = {}
    impls = getattr(manager.hook, hook_name).get_hookimpls()
    # pluggy keeps implementations in registration order; built-ins were registered first.
    for impl in impls:
        provider = _state.providers.get(impl.plugin_name, impl.plugin_name)
        registered: list[type] = []
        try:
            impl.function(register=registered.append)
        except Exception as exc:
            _state.failures.append(PluginFailure(impl.plugin_name, _one_line(exc)))
            continue
        for cls in registered:
            if not (isinstance(cls, type) and issubclass(cls, PluginBase) and cls.kind == kind):
                _state.failures.append(PluginFailure(
                    impl.plugin_name, f"{hook_name} registered {cls!r}, which is not a {human} class"))
                continue
            if not cls.name:
                _state.failures.append(PluginFailure(impl.plugin_name, f"{cls.__name__} has no name"))
                continue
            if cls.name in registry or cls.name in aliases:
                owner = registry.get(cls.name) or registry[aliases[cls.name]]
                _state.failures.append(PluginFailure(
                    impl.plugin_name,
                    f"{human} '{cls.name}' is already provided by {owner.provider}; ignored"))
                continue
            registry[cls.name] = RegisteredPlugin(cls, provider, _state.distributions.get(impl.plugin_name))
            record_provider(cls, _state.distributions.get(impl.plugin_name))
            for alias in cls.aliases:
                # Lookups try aliases first: an alias equal to another plugin's name would
                # hijack it, so names and earlier aliases win.
                taken = registry.get(alias) or (registry[aliases[alias]] if alias in aliases else None)
                if taken is not None and taken.cls is not cls:
                    _state.failures.append(PluginFailure(
                        impl.plugin_name, f"{human} alias '{alias}' of '{cls.name}' is already taken by "
                                          f"'{taken.cls.name}' of {taken.provider}; ignored"))
                elif alias != cls.name:
                    aliases[alias] = cls.name
    _state.registries[kind] = registry
    _state.aliases[kind] = aliases


def available_plugins(kind: str) -> dict[str, RegisteredPlugin]:
    """All registered plugins of a kind ('text', 'image', 'reducer', 'source'), by name."""
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind not in _state.registries:
        _collect(kind)
    return _state.registries[kind]


def providing_distribution(cls: type[PluginBase]) -> str | None:
    """The distribution whose entry point registered ``cls`` (``placedemarche`` for the
    built-ins): the package whose extras install the plugin's dependencies."""
    if cls.kind not in KINDS:
        return None
    for entry in available_plugins(cls.kind).values():
        if entry.cls is cls:
            return entry.distribution
    return None


def plugin_failures() -> list[PluginFailure]:
    for kind in KINDS:
        available_plugins(kind)
    return list(dict.fromkeys(_state.failures))


def loaded_plugins() -> list[dict[str, Any]]:
    """What ``pm plugins`` shows: each loaded plugin module, its provider and hooks."""
    manager = get_plugin_manager()
    rows = []
    for name, plugin in manager.list_name_plugin():
        hooks = sorted(h.name for h in manager.get_hookcallers(plugin) or [])
        provider = _state.providers.get(name, "")
        version = ""
        if provider and provider != "placedemarche":
            try:
                version = metadata.version(provider)
            except metadata.PackageNotFoundError:
                pass
        rows.append({"name": name, "provider": provider, "version": version, "hooks": hooks})
    return rows


def get_plugin_class(kind: str, name: str) -> type[PluginBase]:
    """Look a plugin class up by name or alias; unknown names get a 'did you mean' error."""
    registry = available_plugins(kind)
    name = _state.aliases[kind].get(name, name)
    if name in registry:
        return registry[name].cls
    human = KINDS[kind][1]
    known = sorted(registry) + sorted(_state.aliases[kind])
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    failed = [f.plugin for f in _state.failures]
    note = f" ({len(failed)} plugin(s) failed to load: see `pm plugins`)" if failed else ""
    raise UnknownPluginError(
        f"unknown {human} '{name}': {hint}available: {', '.join(sorted(registry)) or '(none)'}{note}"
    )


def parse_plugin_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Parse ``name`` or ``name:key=value,key=value`` into a name and parameters.

    Values are Python literals (``max_features=5000``, ``ngram_range=(1,2)``,
    ``weights=None``); anything else is kept as a string (``weights=/path/w.h5``).
    """
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise PluginConfigError(f"empty plugin name in {spec!r}")
    params: dict[str, Any] = {}
    for item in _split_params(rest):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise PluginConfigError(
                f"cannot read parameter {item!r} in {spec!r}: write NAME:key=value,key=value"
            )
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()
        params[key.strip()] = value
    return name, params


def _split_params(text: str) -> list[str]:
    """Split on commas that are not inside brackets, so tuples survive."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return [p for p in parts if p.strip()]


def check_specs(specs: Mapping[str, Iterable[str]]) -> None:
    """Check every requested plugin before any work starts, and report all problems at once.

    ``specs`` maps a kind (any of :data:`KINDS`) to spec strings, e.g.
    ``{"text": ["use"], "image": ["nasnet"], "clusterer": ["kmeans", "hdbscan"]}``.
    Each spec must parse, name a registered plugin, have its dependencies installed and use
    only parameters the plugin accepts. One problem is raised as is; several are joined into
    one line, raised as their common error class (else :class:`PluginConfigError`), so a run
    with two missing extras names both instead of failing on the first after loading data.
    """
    problems: dict[str, PlaceDeMarcheError] = {}  # by message: a repeated spec reports once
    for kind, kind_specs in specs.items():
        for spec in kind_specs:
            try:
                name, params = parse_plugin_spec(spec)
                cls = get_plugin_class(kind, name)
            except PlaceDeMarcheError as exc:
                problems.setdefault(str(exc), exc)
                continue
            for check in (cls.require, functools.partial(cls.check_params, params)):
                try:
                    check()
                except PlaceDeMarcheError as exc:
                    problems.setdefault(str(exc), exc)
    if len(problems) == 1:
        raise next(iter(problems.values()))
    if problems:
        classes = {type(exc) for exc in problems.values()}
        error = classes.pop() if len(classes) == 1 else PluginConfigError
        raise error(f"{len(problems)} problems with the requested plugins: " + "; ".join(problems))


def create_plugin(kind: str, spec: str, **overrides: Any) -> PluginBase:
    """Instantiate a plugin from a spec string such as ``'tfidf:max_features=5000'``."""
    name, params = parse_plugin_spec(spec)
    cls = get_plugin_class(kind, name)
    cls.require()
    params.update(overrides)
    return cls.create(**params)
