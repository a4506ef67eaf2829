"""A tiny deterministic token-streaming model behind litserve's OpenAI spec: a real OpenAI-compatible server
for the load tests (``python openai_tokens_server.py PORT``).

``/v1/chat/completions`` answers ``max_tokens`` tokens (``t0 ``, ``t1 ``, …), one every 30 ms, whole or as
server-sent events; a prompt that says ``fail`` breaks the model after two tokens (litserve then ends the
stream with an error event, after HTTP 200). Nothing here is a mock: uvicorn, litserve's worker process
and its SSE encoding are what a user's litserve deployment runs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import litserve as ls
from litserve.specs.openai import OpenAISpec

TOKEN_GAP_S = 0.03


class Tokens(ls.LitAPI):
    def setup(self, device: str) -> None:
        pass

    def predict(self, x: Any, context: dict[str, Any]) -> Iterator[str]:
        fail = "fail" in str(x)
        for i in range(min(int(context.get("max_tokens") or 4), 64)):
            if fail and i == 2:
                raise RuntimeError("the model broke mid-stream")
            time.sleep(TOKEN_GAP_S)
            yield f"t{i} "


if __name__ == "__main__":
    server = ls.LitServer(Tokens(spec=OpenAISpec(), stream=True), accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=int(sys.argv[1]), generate_client_file=False)
