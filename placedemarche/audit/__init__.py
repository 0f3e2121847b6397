"""Audit: the products whose declared category is probably wrong (confident learning)."""
