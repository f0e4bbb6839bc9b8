"""`python -m chainlets.serve CHAIN_FILE`: the same as `chainrunner serve CHAIN_FILE`."""

from chainlets.serve.command import main

main()
