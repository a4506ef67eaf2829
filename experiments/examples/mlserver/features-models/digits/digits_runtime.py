"""An MLServer custom runtime: the digits model with a dependency — it asks the feature service for the pixel scale.

MLServer imports it from this folder (``implementation: digits_runtime.FeatureDigits`` in model-settings.json)
in its inference worker process. Each request first calls ``$FEATURES_URL/features/digits`` (faultdrill hands
the replica its fault proxy's address) with a 250 ms timeout and falls back to the built-in scale when the call
fails: the way such a runtime is usually written — a timeout and a default, no circuit breaker. The model file
is the sklearn runtime's (``../../models/digits/model.joblib``, trained by ``make server-mlserver``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import aiohttp
import joblib
import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, NumpyRequestCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

DEFAULT_SCALE = 16.0
TIMEOUT = aiohttp.ClientTimeout(total=0.25)
log = logging.getLogger("digits")


class FeatureDigits(MLModel):
    async def load(self) -> bool:
        self._model: Any = joblib.load(await get_model_uri(self._settings))
        self._url = os.environ.get("FEATURES_URL", "").rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._fallbacks = 0
        return True

    async def _scale(self) -> float:
        if not self._url:
            return DEFAULT_SCALE
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=TIMEOUT)
        try:
            async with self._session.get(f"{self._url}/features/digits") as answer:
                answer.raise_for_status()
                return float((await answer.json())["scale"])
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
            self._fallbacks += 1
            if self._fallbacks in (1, 10, 100, 1000) or self._fallbacks % 10000 == 0:
                log.warning("feature service failed (%s): built-in scale used (%d times)", type(exc).__name__,
                            self._fallbacks)  # fmt: skip
            return DEFAULT_SCALE

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        pixels = NumpyRequestCodec.decode_request(payload).astype(np.float64).reshape(-1, 64)
        scale = await self._scale()
        classes = self._model.predict(pixels * (DEFAULT_SCALE / scale)).astype(np.int64).reshape(-1, 1)
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=[NumpyCodec.encode_output("predict", classes)])  # fmt: skip

    async def unload(self) -> bool:
        if self._session is not None:
            await self._session.close()
        return True
