"""The placedemarche core: plugin contract, catalogue, cache, evaluator, classifier."""
