"""One router per resource: search, classify, items, health."""
