"""Loaded by a process a test starts with this directory on PYTHONPATH: it reports the host name in
CERES_TEST_HOSTNAME, as a worker on another machine would (tests/test_hosts.py)."""

import os
import socket

if os.environ.get("CERES_TEST_HOSTNAME"):
    socket.gethostname = lambda: os.environ["CERES_TEST_HOSTNAME"]
