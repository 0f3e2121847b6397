"""placedemarche: product categorisation from text and images, with pluggable extractors."""

from .core.base import Classifier, Clusterer, ImageExtractor, Reducer, Source, TextExtractor
from .core.catalog import Catalog
from .core.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "Catalog",
    "Classifier",
    "Clusterer",
    "ImageExtractor",
    "Reducer",
    "Source",
    "TextExtractor",
    "__version__",
    "hookimpl",
]
