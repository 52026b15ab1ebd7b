"""Causal-LM rerankers in torch: the last position's logits of the answer tokens, nothing else.

Only the answer tokens' columns leave the model (``logits_to_keep=1`` where transformers supports
it, so the full vocabulary projection runs for one position, not every token).

Rows are left-padded; their position ids are counted from each row's first real token (from the
attention mask), so a prompt is encoded at the same positions alone or padded into any batch and
its score does not depend on the batch it lands in (transformers counts positions from the
padding otherwise, and rotary embeddings at shifted positions move scores beyond float noise).

``share_prefix=True`` runs the prompt part every row of a batch shares (system text, instruction,
query) once, and the rows' remainders against its key/value cache; whether that pays is measured
in benchmarks/causal_prefix.py (it is off by default unless it wins there).
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
        share_prefix: bool = False,
        min_shared: int = 16,
    ) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError as exc:
            raise BackendUnavailableError(
                "causal-LM rerankers need torch and transformers: pip install 'crossrank[torch]'"
            ) from exc
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
        params = inspect.signature(model.forward).parameters
        self._keep = "logits_to_keep" in params
        self._positions = "position_ids" in params
        # transformers renamed ``past_key_values`` to ``cache``; pass whichever this version takes.
        self._cache_arg = (
            "cache" if "cache" in inspect.signature(model.get_decoder().forward).parameters else "past_key_values"
        )
        self.name = f"torch-{self.dtype}" + ("" if dev == "cpu" else f"@{dev}")
        self.preferred_batch_size = 8
        self.share_prefix = share_prefix
        self.min_shared = min_shared
        self.shared_tokens = 0  # prefix tokens not recomputed thanks to sharing, for tests and benchmarks

    def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Answer-token logits at each row's last position, (batch, len(token_ids)) float32."""
        if self.share_prefix and len(batch["input_ids"]) > 1:
            rows = [r[m.astype(bool)] for r, m in zip(batch["input_ids"], batch["attention_mask"])]
            shared = _common_prefix(rows)
            if shared >= self.min_shared and all(len(r) > shared for r in rows):
                return self._forward_shared(rows, shared)
        torch = self._torch
        mask = batch["attention_mask"]
        with torch.inference_mode():
            kwargs: dict[str, Any] = {
                "input_ids": torch.from_numpy(batch["input_ids"]).to(self._device),
                "attention_mask": torch.from_numpy(mask).to(self._device),
            }
            if self._positions:
                kwargs["position_ids"] = torch.from_numpy(position_ids(mask)).to(self._device)
            if self._keep:
                kwargs["logits_to_keep"] = 1
            logits = self._model(**kwargs).logits[:, -1, :]
            return np.asarray(logits[:, self._columns].float().cpu().numpy(), dtype=np.float32)

    def _forward_shared(self, rows: list[np.ndarray], shared: int) -> np.ndarray:
        """The shared prefix once (batch 1), then every remainder (right-padded) against its cache."""
        torch = self._torch
        n = len(rows)
        tails = [r[shared:] for r in rows]
        width = max(len(t) for t in tails)
        ids = np.zeros((n, width), dtype=np.int64)
        mask = np.zeros((n, shared + width), dtype=np.int64)
        mask[:, :shared] = 1
        for i, t in enumerate(tails):
            ids[i, : len(t)] = t
            mask[i, shared : shared + len(t)] = 1
        base = self._model.get_decoder()
        with torch.inference_mode():
            prefix = torch.from_numpy(np.asarray(rows[0][:shared], dtype=np.int64)[None, :]).to(self._device)
            first = base(input_ids=prefix, use_cache=True)
            cache = getattr(first, "cache", None) or first.past_key_values
            cache.batch_repeat_interleave(n)
            hidden = base(
                input_ids=torch.from_numpy(ids).to(self._device),
                attention_mask=torch.from_numpy(mask).to(self._device),
                use_cache=True,
                **{self._cache_arg: cache},
            ).last_hidden_state
            last = hidden[torch.arange(n), torch.tensor([len(t) - 1 for t in tails])]
            head = self._model.get_output_embeddings()
            logits = last @ head.weight[self._columns].T
            if getattr(head, "bias", None) is not None:
                logits = logits + head.bias[self._columns]
            cap = getattr(self._model.config, "final_logit_softcapping", None)
            if cap:
                logits = torch.tanh(logits / cap) * cap
        self.shared_tokens += shared * (n - 1)
        return np.asarray(logits.float().cpu().numpy(), dtype=np.float32)


def position_ids(attention_mask: np.ndarray) -> np.ndarray:
    """Each token's position counted from its row's first real token (padding: 0), int64."""
    mask = np.asarray(attention_mask, dtype=np.int64)
    return np.maximum(np.cumsum(mask, axis=1) - 1, 0) * mask


def _common_prefix(rows: list[np.ndarray]) -> int:
    """Length of the token prefix every row shares."""
    first = rows[0]
    n = min(len(r) for r in rows)
    for r in rows[1:]:
        diff = np.nonzero(r[:n] != first[:n])[0]
        n = int(diff[0]) if len(diff) else n
    return n
