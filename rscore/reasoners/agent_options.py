"""The ``agent`` reasoner's bounds (:class:`AgentOptions`), apart from the reasoner: the core's option list
(``rscore plugins list``, ``rscore.builtin.core_options``) reads their fields without loading the agent loop (#22).
:mod:`rscore.reasoners.agent` re-exports the class."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rscore.errors import OptionError
from rscore.options import scoped, typed

__all__ = ["AgentOptions", "TILE_MODES"]

TILE_MODES = ("auto", "all", "selected")  # rscore.reasoners.agent_tiles re-exports it


@dataclass(frozen=True)
class AgentOptions:
    """Bounds of the loop. ``max_turns``: model requests (repair turns included); ``max_total_tokens``: prompt +
    completion tokens over the whole loop (the server's ``usage``; estimated from characters when it sends none);
    ``max_wall_s``: seconds for everything; ``max_images_per_turn``: pictures ``examine_masks`` sends back at once;
    ``max_masks``: masks kept; ``repairs``: repair turns in a row before giving up; ``tool_format``: ``auto``
    (send ``tools`` and read both forms) or ``text`` (describe the tools in the prompt only, for servers that
    reject ``tools``). On a scene larger than the picture (:mod:`rscore.reasoners.agent_tiles`): ``tiles``
    ``auto`` | ``all`` | ``selected`` (which tiles get a loop after the overview's) and ``max_tiles`` (the most
    tile loops in one call; every bound above is per loop)."""

    max_turns: int = 12
    max_total_tokens: int = 100_000
    max_wall_s: float = 300.0
    max_images_per_turn: int = 4
    max_masks: int = 32
    repairs: int = 1
    tool_format: str = "auto"
    tiles: str = "auto"
    max_tiles: int = 16

    def __post_init__(self) -> None:
        for ok, message in (
            (1 <= self.max_turns <= 100, "max_turns must be 1..100"),
            (self.max_total_tokens >= 256, "max_total_tokens must be >= 256"),
            (self.max_wall_s > 0, "max_wall_s must be > 0 (seconds)"),
            (1 <= self.max_images_per_turn <= 16, "max_images_per_turn must be 1..16"),
            (1 <= self.max_masks <= 1000, "max_masks must be 1..1000"),
            (0 <= self.repairs <= 3, "repairs must be 0..3"),
            (self.tool_format in ("auto", "text"), "tool_format must be auto or text"),
            (self.tiles in TILE_MODES, f"tiles must be one of {', '.join(TILE_MODES)}"),
            (1 <= self.max_tiles <= 1000, "max_tiles must be 1..1000"),
        ):
            if not ok:
                raise OptionError(f"agent reasoner: {message}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> AgentOptions:
        return cls(**typed(cls, scoped(options, "agent", cls, what="agent reasoner"), what="agent reasoner option"))
