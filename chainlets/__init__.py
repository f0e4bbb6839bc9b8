"""chainrunner: the chain language, the eager engine, and the chainlets that run it."""
