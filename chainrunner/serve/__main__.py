"""`python -m chainrunner.serve CHAIN_FILE`: the same as `chainrunner serve CHAIN_FILE`."""

from chainrunner.serve.command import main

main()
