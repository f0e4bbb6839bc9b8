"""A user's runner with a function of its own, as `--runner double_runner:DoubleRunner` loads
it: without a code runner chainlet of its own, its code steps run in its process."""

from chainlets.language.plugins import DEFAULT_PLUGINS
from chainlets.runner import ChainRunner


def double(n: int) -> int:
    """Twice `n`."""
    return 2 * n


class DoubleRunner(ChainRunner):
    plugins = DEFAULT_PLUGINS.with_functions(double)
