"""A user's module that fails on import: the CLI must say where, and exit 2."""

raise RuntimeError("the user's module is broken")
