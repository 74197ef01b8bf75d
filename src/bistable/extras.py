"""The error for a feature whose optional dependency (an extra of pyproject.toml: ``plot``,
``peers``, ``neuromorphic``, ``triton``) is not installed."""


class MissingExtra(ImportError):
    """An optional dependency is missing; the message names the ``pip install`` that brings it.
    The command line reports it in one line (exit code 2), as any other fault of the set-up."""
