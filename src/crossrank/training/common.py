"""What both training commands share: the extra check, seeding, trainer settings, losses' scales, results.

The trainers themselves are sentence-transformers' (``SentenceTransformerTrainer``,
``CrossEncoderTrainer``), on Hugging Face's ``Trainer``: checkpoints carry optimizer, scheduler and
RNG state, so a resumed run continues exactly where the interrupted one stopped, and
``load_best_model_at_end`` keeps the checkpoint with the best held-out metric.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crossrank.errors import InvalidArgumentError, missing_extra


def require_training() -> None:
    """Fail early, naming the extra, when the trainers' dependencies are missing."""
    for package in ("torch", "sentence_transformers", "datasets", "accelerate"):  # crossrank[train] has [torch]
        try:
            importlib.import_module(package)
        except ImportError as exc:
            raise missing_extra(package, "train") from exc


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the process heap instead of unmapping it (Linux only).

    A training step allocates and frees activations of hundreds of MB; glibc serves blocks over
    32 MB with fresh ``mmap`` calls and unmaps them on free, so every step faults in and zeroes
    gigabytes of pages again: on a 2-core machine a 160-sequence MiniLM step spent more time in the
    kernel than computing (``benchmarks/README.md``). With ``mmap`` off for the heap and no
    trimming, the same blocks are reused. The price is that the process keeps its peak memory until
    it exits, which is why the ``crossrank distill`` / ``finetune`` commands (one run per process)
    call this and the library functions do not: call it yourself in a process dedicated to training.

    Returns whether the settings took (False off glibc, e.g. macOS or musl).
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
    return bool(
        mallopt(m_mmap_max, 0) == 1 and mallopt(m_trim_threshold, 1 << 40) == 1 and mallopt(m_top_pad, 1 << 28) == 1
    )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the trainer reseeds its own sampler and dropout from ``seed`` too)."""
    from transformers import set_seed

    set_seed(seed)


def check_fraction(name: str, value: float) -> float:
    """A number strictly between 0 and 1."""
    if not 0 < value < 1:
        raise InvalidArgumentError(f"{name} must be between 0 and 1, got {value}")
    return value


@dataclass(frozen=True)
class Schedule:
    """How long a run is and when it evaluates and checkpoints."""

    steps: int
    eval_steps: int
    logging_steps: int


def schedule(examples: int, batch_size: int, epochs: float, max_steps: int | None, evaluations: int) -> Schedule:
    """Total optimizer steps, and an evaluation + checkpoint every ``steps / evaluations`` steps.

    The total is rounded up to a whole number of evaluation intervals, so the last step is always
    evaluated and checkpointed (the trainer only keeps models it has evaluated).
    """
    if examples < 1:
        raise InvalidArgumentError("no training examples: every query lacked enough candidates")
    per_epoch = math.ceil(examples / batch_size)
    wanted = max_steps if max_steps else max(1, math.ceil(per_epoch * epochs))
    every = max(1, math.ceil(wanted / max(1, evaluations)))
    steps = every * math.ceil(wanted / every)
    return Schedule(steps, every, max(1, min(every, steps // 20 or 1)))


PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def training_device(requested: str) -> str:
    """Where a run trains: ``cpu`` or ``cuda``; ``auto`` takes the GPU when torch sees one.

    One GPU: the trainer uses the first visible device (choose it with ``CUDA_VISIBLE_DEVICES``).
    Asking for ``cuda`` where torch has none is an error that says why, never a silent CPU run.
    """
    if requested not in DEVICES:
        raise InvalidArgumentError(
            f"device {requested!r}: choose from {', '.join(DEVICES)} (pick a GPU with CUDA_VISIBLE_DEVICES)"
        )
    if requested == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise InvalidArgumentError(
            f"device 'cuda': torch {torch.__version__} sees no CUDA GPU"
            + ("" if torch.version.cuda else " (this torch is a CPU-only build)")
            + "; use --device auto or cpu"
        )
    return "cpu"


def training_precision(requested: str, device: str = "cpu") -> str:
    """The precision a run trains in: ``fp32``, or ``bf16`` mixed precision (fp32 master weights).

    ``auto`` takes bf16 where the hardware computes it natively: on CUDA, a GPU that supports it
    (Ampere and newer); on CPU, AMX or AVX-512 BF16, within any ``CROSSRANK_MAX_CPU_ISA`` /
    ``ONEDNN_MAX_CPU_ISA`` limit (:func:`crossrank.cpuinfo.effective_flags`). Elsewhere fp32, where
    bf16 would be emulated and slower. The model card says which hardware and precision trained it.
    """
    if requested not in PRECISIONS:
        raise InvalidArgumentError(f"precision {requested!r}: choose from {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    if device == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    from crossrank.cpuinfo import has_native_bf16

    return "bf16" if has_native_bf16() else "fp32"


def describe_device(device: str) -> str:
    """The hardware a run trained on, for model cards: the GPU's name, or the CPU and its ISA flags."""
    if device == "cuda":
        import torch

        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    from crossrank.cpuinfo import describe

    return describe()


def training_arguments(
    cls: Any,
    output_dir: str,
    *,
    batch_size: int,
    learning_rate: float,
    warmup: float,
    seed: int,
    plan: Schedule,
    metric: str,
    progress: bool,
    precision: str = "fp32",
    device: str = "cpu",
    **extra: Any,
) -> Any:
    """Trainer arguments: step-based evaluation and checkpoints, best kept, no reporting.

    ``device`` and ``precision`` are resolved ones (:func:`training_device`,
    :func:`training_precision`): ``bf16`` turns on the trainer's autocast on that device.
    ``extra`` are further fields of ``cls`` (the multi-vector trainer's ``max_length``).
    """
    return cls(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        max_steps=plan.steps,
        learning_rate=learning_rate,
        warmup_steps=warmup,
        seed=seed,
        data_seed=seed,
        eval_strategy="steps",
        eval_steps=plan.eval_steps,
        save_strategy="steps",
        save_steps=plan.eval_steps,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=True,
        logging_steps=plan.logging_steps,
        report_to="none",
        disable_tqdm=not progress,
        use_cpu=device == "cpu",
        bf16=precision == "bf16",
        dataloader_num_workers=0,
        **extra,
    )


def quiet(trainer: Any) -> Any:
    """Drop the callback that prints log dicts to stdout (``--json`` output must stay clean)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def losses_from(history: Sequence[dict[str, Any]]) -> list[float]:
    """Every logged training loss, in order."""
    return [float(h["loss"]) for h in history if "loss" in h and "eval_loss" not in h]


def eval_history(history: Sequence[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """Every held-out evaluation of a run, in order: its step, epoch and metrics (prefix stripped)."""
    out = []
    for h in history:
        metrics = {k.removeprefix(prefix): float(v) for k, v in h.items() if k.startswith(prefix)}
        if metrics:
            out.append({"step": int(h.get("step", 0)), "epoch": float(h.get("epoch", 0.0)), **metrics})
    return out


def best_eval(history: Sequence[dict[str, Any]], best_checkpoint: str | None, prefix: str) -> dict[str, float]:
    """The held-out metrics logged at the best checkpoint's step (prefix stripped), else the last ones."""
    evals = [h for h in history if any(k.startswith(prefix) for k in h)]
    if not evals:
        return {}
    chosen = evals[-1]
    if best_checkpoint:
        step = int(str(best_checkpoint).rstrip("/").rpartition("-")[2] or -1)
        chosen = next((h for h in evals if h.get("step") == step), chosen)
    return {k.removeprefix(prefix): float(v) for k, v in chosen.items() if k.startswith(prefix)}


class ScaledCosine:
    """``scale * cos(a, b)`` row by row: a cosine student on the scale of a cross-encoder's logits.

    Cosines live in [-1, 1] while a teacher's logits span about ten units; MarginMSE on raw cosines
    can never match the teacher's margins, and a softmax over raw cosines is nearly flat. Scaling
    (20, as in sentence-transformers' ranking losses) puts both on one footing.
    """

    def __init__(self, scale: float = 20.0) -> None:
        if not scale > 0:
            raise InvalidArgumentError(f"similarity scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.__name__ = "scaled_cosine"

    def __call__(self, a: Any, b: Any) -> Any:
        from sentence_transformers.util import pairwise_cos_sim

        return self.scale * pairwise_cos_sim(a, b)

    def get_config_dict(self) -> dict[str, float]:
        return {"scale": self.scale}


def begin_run(config: Any) -> tuple[Any, float]:
    """Check a run's config and the extra, open (or resume) its run folder and seed everything.

    Returns the :class:`~crossrank.training.runstate.RunDir` and the start time.
    """
    from crossrank.training.runstate import RunDir

    config.check()
    training_precision(config.precision)
    require_training()
    training_device(config.device)
    t0 = time.perf_counter()
    run = RunDir(config.out, config.settings(), restart=config.restart)
    seed_everything(config.seed)
    return run, t0


def optimizer_options(config: Any) -> dict[str, Any]:
    """The ``training_arguments`` options both trainers take straight from their config."""
    device = training_device(config.device)
    return {
        "learning_rate": config.learning_rate,
        "warmup": config.warmup,
        "seed": config.seed,
        "progress": config.progress,
        "precision": training_precision(config.precision, device),
        "device": device,
    }


def evaluate_before(run: Any, evaluator: Any, model: Any) -> dict[str, float]:
    """The held-out metrics of the untrained model (computed once, then read from the run folder)."""
    before: dict[str, float] | None = run.stage("before")
    if before is None:
        before = {k.removeprefix("heldout_"): v for k, v in evaluator(model).items()}
        run.save_stage("before", before)
    return before


def fit(run: Any, trainer: Any) -> tuple[dict[str, float], list[dict[str, Any]], str | None]:
    """Train, resuming from the run's last checkpoint if any: (best held-out metrics, log history, resumed from)."""
    resume = run.last_checkpoint()
    trainer.train(resume_from_checkpoint=resume)
    history: list[dict[str, Any]] = trainer.state.log_history
    return best_eval(history, trainer.state.best_model_checkpoint, "eval_heldout_"), history, resume
