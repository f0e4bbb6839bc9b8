"""Errors of `chainrunner serve`.

ServeError                      base: serve cannot do what was asked; the message says how to fix
├── BuildError                  the chain does not import or truss rejects it; under --watch the
│                               version already serving keeps serving
├── PortInUseError              the gateway port is taken on 127.0.0.1
├── ChainletStartError          a chainlet exited or did not become ready while starting; carries
│                               the chainlet's name and the tail of its log
├── ChainletStopError           a chainlet's exit was not reported after SIGKILL (serve can no
│                               longer vouch that it is gone)
└── ChainletUnavailableError    a request needed a chainlet that is not running (the gateway
                                answers 503 with this message)

Each is constructible from one message string.
"""

__all__ = [
    "BuildError",
    "ChainletStartError",
    "ChainletStopError",
    "ChainletUnavailableError",
    "PortInUseError",
    "ServeError",
]


class ServeError(Exception):
    """Base of every serve error."""


class BuildError(ServeError):
    """Raised when generating the chain's trusses fails: import error, truss validation error."""


class PortInUseError(ServeError):
    """Raised when the gateway cannot bind its port."""


class ChainletStartError(ServeError):
    """Raised when a chainlet process exits or times out before answering readiness."""


class ChainletStopError(ServeError):
    """Raised when a chainlet's exit is not reported soon after it was sent SIGKILL."""


class ChainletUnavailableError(ServeError):
    """Raised when a request needs a chainlet that has exited or is restarting."""
