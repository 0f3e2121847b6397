"""The exceptions placedemarche raises: each carries a one-line message meant for the user."""


class PlaceDeMarcheError(Exception):
    """Base class: the CLI prints these as a one-line error, never as a traceback."""


class UnknownPluginError(PlaceDeMarcheError, KeyError):
    """No plugin of the requested kind has that name."""

    def __str__(self):  # KeyError would quote the message
        return self.args[0] if self.args else ""


class MissingDependencyError(PlaceDeMarcheError, ImportError):
    """A plugin needs an optional library that is not installed."""


class CatalogError(PlaceDeMarcheError, ValueError):
    """A catalogue file or its rows cannot be used as asked."""


class PluginConfigError(PlaceDeMarcheError, ValueError):
    """A plugin was given parameters it does not accept."""


class ImageReadError(PlaceDeMarcheError, OSError):
    """An image file is missing or cannot be decoded."""


class SourceError(PlaceDeMarcheError):
    """A source (API) failed: HTTP error, timeout, bad response, missing credentials."""


class ModelAssetError(PlaceDeMarcheError, OSError):
    """Model weights shipped as packages are incomplete or corrupt, or cannot be extracted."""
