"""The pluggy hook specifications of placedemarche: one registration hook per kind of plugin."""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("placedemarche")
hookimpl = HookimplMarker("placedemarche")


@hookspec
def register_text_extractors(register):
    """Register TextExtractor subclasses: call register(cls) once per class."""


@hookspec
def register_image_extractors(register):
    """Register ImageExtractor subclasses: call register(cls) once per class."""


@hookspec
def register_reducers(register):
    """Register Reducer subclasses: call register(cls) once per class."""


@hookspec
def register_sources(register):
    """Register Source subclasses: call register(cls) once per class."""


@hookspec
def register_clusterers(register):
    """Register Clusterer subclasses: call register(cls) once per class."""


@hookspec
def register_classifiers(register):
    """Register Classifier subclasses (classifier heads): call register(cls) once per class."""
