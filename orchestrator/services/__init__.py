"""Services a machine runs: private Redis and MongoDB-wire servers, `standalone`, the demo
and the example workflows, and child processes.

Above the public API; below the command line.
"""
