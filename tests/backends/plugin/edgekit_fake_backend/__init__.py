"""A third-party backend as a plugin package would ship one: registered only through its entry point.

tests/backends/test_plugin.py installs it by writing a ``*.dist-info`` with an ``edgekit.backends`` entry
point, ``fake = "edgekit_fake_backend.backend:FakeBackend"``, beside this folder on ``PYTHONPATH``.
"""
