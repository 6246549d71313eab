"""The HTTP service: similar-image search, text-to-image search, zero-shot classification, items and a web page."""
