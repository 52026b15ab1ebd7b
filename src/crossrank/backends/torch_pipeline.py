"""How the torch backend runs a call's batches: one copy in per batch, one copy out per call, repeating shapes.

On a GPU, a small cross-encoder's arithmetic for 100 pairs takes well under a millisecond; what a
naive loop spends is host/device round trips: three copies in and a synchronising copy out per
batch. Here, per call:

- **one host→device copy per batch**: the batch's token inputs are written into one (pinned, on
  CUDA) host buffer and copied with ``non_blocking=True``; the model reads views of it;
- **no synchronisation per batch**: logits stay on the device; after the last batch they are
  joined and copied back once. Kernel launches return at once, so the host pads the *next* batch
  (the engine hands batches over lazily) while the device still runs the current one;
- **length buckets**: a batch is padded to the next bucket width (and, when compiled, its rows to a
  power of two), so shapes repeat and a compiled graph or CUDA graph is reused, not rebuilt;
- **optional ``torch.compile``** per bucket (``reduce-overhead`` captures CUDA graphs).

The code is the same on every device: on the CPU the buffer is simply not pinned and the copies
are no-ops, which is how the tests run it. Settings come from the environment, read when a
backend is made (engines are shared, so set them before the first ``Reranker`` of a model):

``CROSSRANK_TORCH_BUCKETS``  ``auto`` (on for CUDA, off on the CPU, where padding costs real
                             arithmetic), ``on``, ``off``, or comma-separated widths (``64,128,256``)
``CROSSRANK_TORCH_COMPILE``  ``off`` (default), ``default``, ``reduce-overhead`` (CUDA graphs),
                             ``max-autotune``; ``eager`` traces the model without compiling it
                             (checks that it compiles, no speed-up)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossrank.errors import InvalidArgumentError

BUCKETS_ENV = "CROSSRANK_TORCH_BUCKETS"
COMPILE_ENV = "CROSSRANK_TORCH_COMPILE"
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "eager")
# Widths a batch is padded to: fine steps where rerankers live (chunks of 100-300 tokens), then coarser.
DEFAULT_BUCKETS = (16, 32, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)


@dataclass(frozen=True)
class RunSettings:
    """What the environment asked for, resolved for one device."""

    buckets: tuple[int, ...]  # empty: pad each batch to its longest input only
    compile_mode: str  # one of COMPILE_MODES


def settings_for(device: str, environ: Mapping[str, str] | None = None) -> RunSettings:
    """Read :data:`BUCKETS_ENV` and :data:`COMPILE_ENV` for ``device``; a bad value is an ``InvalidArgumentError``."""
    env = os.environ if environ is None else environ
    raw = env.get(BUCKETS_ENV, "auto").strip().lower() or "auto"
    buckets: tuple[int, ...]
    if raw == "auto":
        buckets = DEFAULT_BUCKETS if device.startswith("cuda") else ()
    elif raw == "on":
        buckets = DEFAULT_BUCKETS
    elif raw == "off":
        buckets = ()
    else:
        try:
            buckets = tuple(sorted({int(x) for x in raw.split(",") if x.strip()}))
        except ValueError:
            buckets = ()
        if not buckets or buckets[0] < 1:
            raise InvalidArgumentError(
                f"{BUCKETS_ENV}={raw!r}: expected auto, on, off or comma-separated widths such as 64,128,256"
            )
    mode = env.get(COMPILE_ENV, "off").strip().lower() or "off"
    if mode not in COMPILE_MODES:
        raise InvalidArgumentError(f"{COMPILE_ENV}={mode!r}: choose one of {', '.join(COMPILE_MODES)}")
    return RunSettings(buckets, mode)


def bucket_width(width: int, buckets: Sequence[int], limit: int | None) -> int:
    """The padded width of a batch whose longest input has ``width`` tokens.

    The next bucket up (beyond the last: the next multiple of 128), never past ``limit`` (the
    model's position table: absolute positions index it even on padding) and never below ``width``.
    """
    if not buckets:
        return width
    up = next((b for b in buckets if b >= width), -(-width // 128) * 128)
    if limit is not None:
        up = min(up, limit)
    return max(width, up)


def bucket_rows(rows: int) -> int:
    """Rows padded to the next power of two, so a compiled model sees few batch shapes."""
    return 1 << max(0, rows - 1).bit_length()


def position_limit(config: Any) -> int | None:
    """The longest input the model's position embeddings take (None: not stated, so never pad past the batch)."""
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class BatchRunner:
    """Runs one model over a call's padded batches with the transfers and shapes described above."""

    def __init__(self, torch: Any, model: Any, device: str, inputs: Sequence[str], settings: RunSettings) -> None:
        self._torch = torch
        self.device = device
        self.inputs = list(inputs)
        self.settings = settings
        self._pin = device.startswith("cuda")
        self._limit = position_limit(getattr(model, "config", None))
        self._call = self._compiled(model) if settings.compile_mode != "off" else model
        # Observability (and what the tests check on the CPU): copies made, in each direction.
        self.host_to_device = 0
        self.device_to_host = 0

    def _compiled(self, model: Any) -> Any:
        torch = self._torch
        mode = self.settings.compile_mode
        if mode == "eager":
            return torch.compile(model, backend="eager", dynamic=False)
        return torch.compile(model, mode=mode, dynamic=False)

    def padded_shape(self, rows: int, width: int) -> tuple[int, int]:
        """The (rows, width) a batch of ``rows`` inputs, the longest ``width`` tokens, is padded to."""
        width = bucket_width(width, self.settings.buckets, self._limit)
        return (bucket_rows(rows) if self.settings.compile_mode != "off" else rows), width

    def _to_device(self, batch: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """The batch's inputs as views of one device tensor, filled from one (pinned) host buffer in one copy."""
        torch = self._torch
        shape = batch["input_ids"].shape
        host = torch.empty((len(self.inputs), *shape), dtype=torch.int64, pin_memory=self._pin)
        view = host.numpy()
        for i, name in enumerate(self.inputs):
            view[i] = batch[name]
        dev = host.to(self.device, non_blocking=True)
        self.host_to_device += 1
        return {name: dev[i] for i, name in enumerate(self.inputs)}

    def run(self, batches: Iterable[Mapping[str, np.ndarray]]) -> list[np.ndarray]:
        """Logits (rows, labels) as float32 per batch, in order; the device is waited on once, at the end.

        ``batches`` may be a generator: each batch is built while the previous one still runs.
        """
        torch = self._torch
        outs = []
        with torch.inference_mode():
            for batch in batches:
                logits = self._call(**self._to_device(batch)).logits
                outs.append(logits.float())
            if not outs:
                return []
            joined = torch.cat(outs).cpu().numpy()  # the one device -> host copy, and the one wait
        self.device_to_host += 1
        bounds = np.cumsum([o.shape[0] for o in outs])[:-1]
        return [np.asarray(part, dtype=np.float32) for part in np.split(joined, bounds)]
