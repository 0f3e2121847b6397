"""The plugin contract: hook specs, base classes, plugin manager, errors, progress, atomic files."""
