"""The one error of the local cluster tool: something it was asked to do did not happen.

The message says what failed and, where it can, what to do or where to look (a node's log file); the CLI prints it
and exits 1, the test fixture fails the test with it.
"""


class ClusterError(RuntimeError):
    """A node, the front or the cluster did not reach the state asked for."""
