"""Features: extraction through the feature store, the store itself, engines and inference runtimes."""
