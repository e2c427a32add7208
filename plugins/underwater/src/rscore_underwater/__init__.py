"""rscore-underwater: colour-cast correction and analytic templates for marine imagery.

The plugin is registered through the ``rscore`` entry-point group as ``underwater`` (:mod:`rscore_underwater.plugin`).
"""

__version__ = "0.1.0"
