"""Causal-LM rerankers in torch: the last position's logits of the answer tokens, nothing else.

Only the answer tokens' columns leave the model (``logits_to_keep=1`` where transformers supports
it, so the full vocabulary projection runs for one position, not every token).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from crossrank.errors import BackendUnavailableError, InvalidArgumentError, ModelLoadError
from crossrank.model_files import ModelInfo


class CausalTorchBackend:
    """``AutoModelForCausalLM`` scoring left-padded prompts; returns (batch, len(token_ids)) logits."""

    def __init__(
        self,
        info: ModelInfo,
        token_ids: Sequence[int],
        *,
        device: str | None = None,
        quantize: str = "auto",
        trust_remote_code: bool = False,
    ) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError as exc:
            raise BackendUnavailableError("causal-LM rerankers need torch and transformers") from exc
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if quantize == "int8":
            raise InvalidArgumentError(
                f"quantize='int8' is not available for causal-LM rerankers ({info.template}); "
                "use 'bf16' or 'fp32' (fp16 is used on CUDA)"
            )
        if quantize == "bf16":
            dtype, self.dtype = torch.bfloat16, "bf16"
        elif quantize == "fp32" or not dev.startswith("cuda"):
            dtype, self.dtype = torch.float32, "fp32"
        else:
            dtype, self.dtype = torch.float16, "fp16"
        try:
            model: Any = AutoModelForCausalLM.from_pretrained(
                str(info.path), dtype=dtype, trust_remote_code=trust_remote_code, local_files_only=True
            )
        except Exception as exc:
            raise ModelLoadError(
                f"could not load {info.name} as a causal LM ({type(exc).__name__}: {exc}); "
                "the weights may be truncated or corrupt: re-download the model"
            ) from exc
        model.to(dev).eval()
        self._model = model
        self._torch = torch
        self._device = dev
        self._columns = torch.tensor(list(token_ids), dtype=torch.long, device=dev)
        self._keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.name = f"torch-{self.dtype}" + ("" if dev == "cpu" else f"@{dev}")
        self.preferred_batch_size = 8

    def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            kwargs: dict[str, Any] = {
                "input_ids": torch.from_numpy(batch["input_ids"]).to(self._device),
                "attention_mask": torch.from_numpy(batch["attention_mask"]).to(self._device),
            }
            if self._keep:
                kwargs["logits_to_keep"] = 1
            logits = self._model(**kwargs).logits[:, -1, :]
            return np.asarray(logits[:, self._columns].float().cpu().numpy(), dtype=np.float32)
