"""rscore-safety: construction-site safety (hi-vis clothing, restricted zones, scaffold compliance prompts)."""

__version__ = "0.1.0"
