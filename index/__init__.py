"""The batch indexing job and the FAISS index versions it publishes."""

try:
    import faiss  # noqa: F401  (from the cpu or gpu extra: the two wheels provide the same module)
except ModuleNotFoundError as exc:
    if exc.name != "faiss":  # FAISS is there but something it needs is not: that is the error to see
        raise
    raise ModuleNotFoundError(
        "lookalike needs FAISS: pip install 'lookalike[cpu]', or 'lookalike[gpu]' on a machine with CUDA "
        "(from a checkout: make install, or make install FAISS=gpu)") from None
