"""Deployable JSON-chain runner: POST a chain definition and inputs to its `run_remote`."""

import truss_chains as chains

from chainlets.runner import ChainRunner


@chains.mark_entrypoint("chainrunner")
class Runner(ChainRunner):
    """The entrypoint: runs any chain definition it is given."""
