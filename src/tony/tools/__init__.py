"""Command-line tools that are not part of the `tony` CLI proper (conformance tables, ...)."""
