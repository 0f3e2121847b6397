"""The `pm` command line: thin click commands grouped by stage, rich rendering."""
