"""rscore-underwater: colour-corrected reasoning segmentation for marine imagery."""

__version__ = "0.1.0"
