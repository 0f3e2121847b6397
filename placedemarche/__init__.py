"""placedemarche: product categorisation from text and images, with pluggable extractors."""

from placedemarche.core.base import Classifier, Clusterer, ImageExtractor, Reducer, Source, TextExtractor
from placedemarche.data.catalog import Catalog
from placedemarche.core.hookspecs import hookimpl

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
