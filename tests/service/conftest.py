"""The in-process service harness, shared by the service's test modules."""

from tests.service.test_operations import harness

__all__ = ["harness"]
