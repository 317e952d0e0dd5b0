#!/bin/sh
# The local cluster tool is Python (local_cluster/, standard library only): `cluster.sh --help` lists its commands.
PYTHONPATH="$(dirname "$0")${PYTHONPATH:+:$PYTHONPATH}" exec python3 -m local_cluster "$@"
