"""The agent's turns on a local VLM through transformers (``--reasoner agent --model NAME --weights DIR``), behind the
surface of :class:`~rscore.reasoners.openai.OpenAIChatClient` that the loop in :mod:`rscore.reasoners.agent` uses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rscore.errors import BackendUnavailable

__all__ = ["_LocalClient"]


class _LocalClient:
    """The agent's turns on a local VLM through transformers (``--reasoner agent --model NAME --weights DIR``): the
    same surface as :class:`~rscore.reasoners.openai.OpenAIChatClient` that the loop uses. Pictures in the chat
    (data URLs) become the processor's image parts in order; tools are described in the prompt (text calls)."""

    def __init__(self, vlm: Any) -> None:
        self.vlm = vlm
        self.display = f"local {vlm.model_name}"

    def __enter__(self) -> _LocalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def error(self, what: str) -> BackendUnavailable:
        return BackendUnavailable(f"agent reasoner ({self.display}): {what}")

    def chat_inputs(self, messages: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
        """The processor-format chat and its pictures."""
        import base64
        import io

        from PIL import Image

        chat, pictures = [], []
        for m in messages:
            role, content = m["role"], m.get("content")
            if role == "tool":
                role, content = "user", f"<tool_response>\n{content}\n</tool_response>"
            parts: list[dict[str, Any]] = []
            for part in ([{"type": "text", "text": content or ""}] if not isinstance(content, list) else content):
                if part.get("type") == "image_url":
                    data = part["image_url"]["url"].split(",", 1)[1]
                    pictures.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")))
                    parts.append({"type": "image"})
                else:
                    parts.append({"type": "text", "text": str(part.get("text", ""))})
            chat.append({"role": role, "content": parts})
        return chat, pictures

    def request_json(self, method: str, path: str, payload: Mapping[str, Any], deadline: float) -> dict[str, Any]:
        chat, pictures = self.chat_inputs(payload["messages"])
        text, stats = self.vlm.chat(chat, None, images=pictures)
        return {"model": self.vlm.model_name, "choices": [{"message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": int(stats["prompt_tokens"]),
                          "completion_tokens": int(stats["completion_tokens"])}}  # fmt: skip
