"""Shared fixtures; the bigger ones live in tests/fixtures/ as plugins."""

import os

os.environ.setdefault("TCP_NODELAY", "1")  # every dcmtk tool the tests start (Nagle, see performance notes)

pytest_plugins = ["tests.fixtures.database", "tests.fixtures.orthanc"]
