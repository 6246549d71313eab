"""Plumbing that training and indexing both use: manifests, shard patterns, process groups, allocator settings.

It imports neither ``training``, ``index`` nor ``service``: both stages build on it."""
