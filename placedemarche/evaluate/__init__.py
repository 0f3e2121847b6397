"""Evaluation: fuse, reduce and cluster features, then score the clusters against the categories."""
