"""rscore-safety: construction-site safety - hi-vis colours, restricted zones, motion, scaffold/PPE prompts.

The plugin is registered through the ``rscore`` entry-point group as ``safety`` (:mod:`rscore_safety.plugin`).
"""

__version__ = "0.1.0"
