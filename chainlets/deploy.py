"""Deployment settings shared by every chainlet: image, pinned requirements, resources."""

from importlib.metadata import version

import truss_chains as chains

__all__ = ["cpu_service", "image"]

# The chainlets' own runtime imports, pinned to what this checkout runs and tests with.
_RUNTIME = ("pydantic", "httpx", "openai", "tenacity")


def image(*extra_requirements: str) -> chains.DockerImage:
    """The image every chainlet runs in: our runtime dependencies, pinned."""
    pins = [f"{name}=={version(name)}" for name in _RUNTIME]
    return chains.DockerImage(pip_requirements=[*pins, *extra_requirements])


def cpu_service(memory: str = "1Gi", concurrency: int = 64) -> chains.Compute:
    """Small CPU service; I/O-bound async chainlets take many requests at once."""
    return chains.Compute(cpu_count=1, memory=memory, predict_concurrency=concurrency)
