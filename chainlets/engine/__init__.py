"""The eager engine: wire models, step state, retries and the scheduler that runs a chain."""
