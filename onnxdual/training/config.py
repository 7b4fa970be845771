"""The settings of a training run (:class:`TrainConfig`) and the schedules they define: the eps ramp and the
learning-rate decay of App. G (Wong et al. 2018)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from onnxdual import defaults
from onnxdual.errors import InvalidInputError

#: default learning rate of each optimiser: Adam 1e-3 (App. G.1, MNIST), SGD 0.05 (App. G.2, CIFAR-10)
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.05}

#: upper limits of the size-like settings, checked up front (a mistyped size must fail at once, not hang or
#: exhaust memory); ``onnxdual train --help`` states them
LIMITS = {"proj": 10_000, "epochs": 100_000, "batch_size": 1_000_000, "ramp_epochs": 100_000,
          "ibp_warmup": 100_000,
          "lr_decay_every": 100_000, "seed": 2 ** 63 - 1}

#: configuration fields a resumed run may change (they do not alter the optimisation trajectory)
RESUMABLE_CHANGES = frozenset({"epochs", "device", "export_epochs"})


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one robust training run (defaults: App. G.1, MNIST).

    Attributes:
        eps: the final perturbation radius.
        norm: ``"linf"`` or ``"l2"`` (App. H).
        proj: number ``r`` of random projections for the bound estimate (Alg. 1); ``None`` trains on the
            exact bound. The paper uses 50 except where noted (§4).
        epochs: total number of epochs.
        batch_size: global batch size (split across ranks in distributed runs).
        optimizer: ``"adam"`` (App. G.1) or ``"sgd"`` with ``momentum`` (App. G.2).
        lr: learning rate; ``None`` means :data:`DEFAULT_LR` of the optimiser.
        eps_start: radius of the first step; ``None`` means 0.01 for MNIST-like and 0.001 for CIFAR-like
            (3-channel) data (App. G.1/G.2); never above ``eps``.
        ramp_epochs: epochs over which eps grows linearly, per step, from ``eps_start`` to ``eps``.
        lr_decay, lr_decay_every: after the ramp, the learning rate is multiplied by ``lr_decay`` every
            ``lr_decay_every`` epochs (App. G).
        seed: seeds the initialisation, the data order and the random projections.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        clip: data domain intersected with l-inf balls (pixels in ``(0, 1)``); ignored for ``l2``.
        reinit: re-initialise the parameters of a given ONNX model instead of fine-tuning them.
        normalize: ``(mean, std)`` per channel built into a built-in architecture (``None``: no layer).
        export_epochs: also write ``epoch_XX.onnx`` after every epoch.
        interval_weight: beyond the paper: the weight ``w`` of interval bounds (IBP, Gowal et al. 2018) in
            the bound trained on, ``(1 - w) J + w J_IBP`` (CROWN-IBP's mix, Zhang et al. 2020, whose
            ``beta`` is ``1 - w``), as ``(start, end)``: linear per step from ``start`` to ``end`` over
            the eps ramp, ``end`` after it. ``(0, 0)``, the default, is the paper's training.
        ibp_warmup: beyond the paper: the first ``ibp_warmup`` epochs train on interval bounds alone
            (``w = 1``: no dual pass, so these steps cost about a plain step) while eps ramps as usual;
            :func:`interval_weight_at` gives the weight of every step.
        clean_weight: beyond the paper: the weight ``kappa`` of the clean cross entropy in the loss,
            ``kappa CE(f(x), y) + (1 - kappa) CE(-J, y)`` (CROWN-IBP's and IBP's ``kappa``, which keeps
            interval training from collapsing early), as ``(start, end)`` ramped as ``interval_weight``
            (:func:`clean_weight_at`). ``(0, 0)``, the default, is the paper's loss.
    """

    eps: float
    norm: str = defaults.NORM
    proj: int | None = defaults.TRAIN_PROJECTIONS
    epochs: int = defaults.EPOCHS
    batch_size: int = defaults.TRAIN_BATCH_SIZE
    optimizer: str = defaults.OPTIMIZER
    lr: float | None = None
    momentum: float = 0.9
    eps_start: float | None = None
    ramp_epochs: int = defaults.RAMP_EPOCHS
    lr_decay: float = 0.5
    lr_decay_every: int = 10
    seed: int = defaults.SEED
    device: str = "cpu"
    clip: tuple[float, float] | None = defaults.CLIP
    reinit: bool = False
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    export_epochs: bool = False
    interval_weight: tuple[float, float] = (0.0, 0.0)
    ibp_warmup: int = 0
    clean_weight: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if not positive(self.eps):
            raise InvalidInputError(f"eps must be a positive finite number, got {self.eps!r}")
        if self.norm not in ("linf", "l2"):
            raise InvalidInputError(f"norm must be 'linf' or 'l2', got {self.norm!r}")
        if self.proj is not None and (isinstance(self.proj, bool) or not isinstance(self.proj, int)
                                      or self.proj < 1):
            raise InvalidInputError(f"proj must be a positive number of projections or None (exact), "
                                    f"got {self.proj!r}")
        for name in ("epochs", "batch_size", "lr_decay_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name.replace('_', ' ')} must be a positive integer, got {value!r}")
        for name in ("interval_weight", "clean_weight"):
            weights = getattr(self, name)
            if (not isinstance(weights, (tuple, list)) or len(weights) != 2
                    or any(isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w <= 1
                           for w in weights)):
                raise InvalidInputError(f"{name.replace('_', ' ')} must be two numbers (start, end) in "
                                        f"[0, 1], got {weights!r}")
            object.__setattr__(self, name, (float(weights[0]), float(weights[1])))
        warmup = self.ibp_warmup
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise InvalidInputError(f"ibp warmup must be a non-negative number of epochs, got {warmup!r}")
        ramp = self.ramp_epochs
        if isinstance(ramp, bool) or not isinstance(ramp, int) or ramp < 0:
            raise InvalidInputError(f"ramp epochs must be a non-negative integer, got {self.ramp_epochs!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InvalidInputError(f"seed must be a non-negative integer, got {self.seed!r}")
        for name, limit in LIMITS.items():
            value = getattr(self, name)
            if value is not None and value > limit:
                raise InvalidInputError(f"{name.replace('_', ' ')} must be at most {limit}, got {value}")
        if self.optimizer not in DEFAULT_LR:
            raise InvalidInputError(f"optimizer must be one of {', '.join(DEFAULT_LR)}, "
                                    f"got {self.optimizer!r}")
        if self.lr is not None and not positive(self.lr):
            raise InvalidInputError(f"learning rate must be a positive number, got {self.lr!r}")
        if self.eps_start is not None and not positive(self.eps_start):
            raise InvalidInputError(f"eps start must be a positive number, got {self.eps_start!r}")
        if not (0 < self.lr_decay <= 1):
            raise InvalidInputError(f"lr decay must lie in (0, 1], got {self.lr_decay!r}")
        if not (0 <= self.momentum < 1):
            raise InvalidInputError(f"momentum must lie in [0, 1), got {self.momentum!r}")
        if self.clip is not None:
            lo, hi = self.clip
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise InvalidInputError(f"clip must be a range lo <= hi, got {self.clip!r}")
            object.__setattr__(self, "clip", (float(lo), float(hi)))
        if self.normalize is not None:
            mean, std = self.normalize
            if len(mean) != len(std) or any(not positive(s) for s in std):
                raise InvalidInputError("normalize needs one mean and one positive std per channel")
            object.__setattr__(self, "normalize", (tuple(map(float, mean)), tuple(map(float, std))))

    @property
    def learning_rate(self) -> float:
        """The initial learning rate (``lr`` or the optimiser's default)."""
        return float(self.lr) if self.lr is not None else DEFAULT_LR[self.optimizer]

    @property
    def effective_clip(self) -> tuple[float, float] | None:
        """The data domain passed to the dual network (only l-inf balls are intersected with it)."""
        return self.clip if self.norm == "linf" else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (tuples become lists)."""
        d = asdict(self)
        d["clip"] = list(self.clip) if self.clip is not None else None
        d["interval_weight"] = list(self.interval_weight)
        d["clean_weight"] = list(self.clean_weight)
        d["normalize"] = ({"mean": list(self.normalize[0]), "std": list(self.normalize[1])}
                          if self.normalize is not None else None)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        if kwargs.get("clip") is not None:
            kwargs["clip"] = tuple(kwargs["clip"])
        for name in ("interval_weight", "clean_weight"):
            if kwargs.get(name) is not None:
                kwargs[name] = tuple(kwargs[name])
        if kwargs.get("normalize") is not None:
            kwargs["normalize"] = (tuple(kwargs["normalize"]["mean"]), tuple(kwargs["normalize"]["std"]))
        return cls(**kwargs)


def positive(value: Any) -> bool:
    """A positive finite number (not a bool)."""
    return (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            and value > 0)


def changed_settings(saved: TrainConfig, config: TrainConfig) -> list[str]:
    """``name=saved value`` for every setting a resumed run (or cascade) would change that alters the
    optimisation trajectory (all but :data:`RESUMABLE_CHANGES`), sorted by name; empty when it may resume."""
    changed = sorted(f.name for f in fields(TrainConfig) if f.name not in RESUMABLE_CHANGES
                     and getattr(saved, f.name) != getattr(config, f.name))
    return [f"{k}={getattr(saved, k)!r}" for k in changed]


def default_eps_start(input_shape: Sequence[int], dataset_name: str = "") -> float:
    """0.01 for MNIST-like data (App. G.1), 0.001 for CIFAR-like 3-channel data (App. G.2)."""
    cifar_like = "cifar" in dataset_name.lower() or (len(input_shape) == 3 and input_shape[0] == 3)
    return 0.001 if cifar_like else 0.01


def resolve_eps_start(config: TrainConfig, input_shape: Sequence[int], dataset_name: str = "") -> float:
    """The radius of the first step: ``config.eps_start`` or the default, never above ``config.eps``."""
    start = config.eps_start if config.eps_start is not None else default_eps_start(input_shape, dataset_name)
    return min(float(start), float(config.eps))


def eps_at(config: TrainConfig, step: int, steps_per_epoch: int, eps_start: float) -> float:
    """The radius at global step ``step`` (0-based): linear in the step from ``eps_start`` at step 0 to
    ``eps`` at step ``ramp_epochs * steps_per_epoch``, constant afterwards (App. G)."""
    ramp_steps = config.ramp_epochs * steps_per_epoch
    if ramp_steps <= 0 or step >= ramp_steps:
        return float(config.eps)
    return eps_start + (config.eps - eps_start) * (step / ramp_steps)


def interval_weight_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The weight of interval bounds in the bound trained on at global step ``step`` (0-based): 1 during
    the first ``ibp_warmup`` epochs, otherwise ``interval_weight`` ramped linearly per step from its start
    (step 0) to its end (step ``ramp_epochs * steps_per_epoch``), as eps is (:func:`eps_at`), and its end
    afterwards."""
    if step < config.ibp_warmup * steps_per_epoch:
        return 1.0
    return _ramped(config.interval_weight, config, step, steps_per_epoch)


def clean_weight_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The weight ``kappa`` of the clean cross entropy at global step ``step`` (0-based): ``clean_weight``
    ramped linearly per step from its start to its end over the eps ramp, its end afterwards."""
    return _ramped(config.clean_weight, config, step, steps_per_epoch)


def _ramped(pair: tuple[float, float], config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """``(start, end)`` linear in the step over the eps ramp (as :func:`eps_at`), ``end`` after it."""
    start, end = pair
    ramp_steps = config.ramp_epochs * steps_per_epoch
    if ramp_steps <= 0 or step >= ramp_steps:
        return end
    return start + (end - start) * (step / ramp_steps)


def lr_at(config: TrainConfig, epoch: int) -> float:
    """The learning rate of epoch ``epoch`` (0-based): constant during the ramp and the first
    ``lr_decay_every`` epochs after it, then multiplied by ``lr_decay`` every ``lr_decay_every`` epochs
    (App. G: "after which we decay the learning rate by a factor of 0.5 every 10 epochs")."""
    decays = max(0, (epoch - config.ramp_epochs) // config.lr_decay_every)
    return config.learning_rate * config.lr_decay ** decays


__all__ = ["TrainConfig", "DEFAULT_LR", "LIMITS", "RESUMABLE_CHANGES", "changed_settings",
           "default_eps_start",
           "resolve_eps_start", "eps_at", "interval_weight_at", "clean_weight_at", "lr_at", "positive"]
