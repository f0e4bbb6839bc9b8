"""`chainrunner serve`: every chainlet of a chain as its own local process, behind a gateway."""
