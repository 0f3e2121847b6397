"""Catalogue and data: the product table, datasets, category trees, sources, images and texts."""
