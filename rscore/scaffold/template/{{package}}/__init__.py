"""{{title}}: an rscore plugin.

The hooks rscore calls are in :mod:`.plugin`, registered through the ``rscore`` entry point in pyproject.toml.
"""

__version__ = "0.1.0"
