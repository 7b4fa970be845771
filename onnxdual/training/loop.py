"""The training loop: robust training of an ONNX network through its dual network (Wong et al. 2018, §3 and
App. G), from the model source to ``out_dir/model.onnx``.

Every step minimises the robust cross entropy ``CE(-J(x, g(e_y - e_j)), y)`` of a batch, where ``J`` is the
dual objective of Theorem 1, computed with ``r`` random projections (Alg. 1, §3.2; ``proj=None`` trains on
the exact bound). As in App. G the radius is ramped linearly, step by step, from ``eps_start`` to ``eps``
over the first ``ramp_epochs`` epochs, after which the learning rate is halved every ``lr_decay_every``
epochs (App. G: 0.5 every 10 epochs of a 60-epoch run); see :mod:`onnxdual.training.config`. Beyond the
paper, a step may train on the dual bound mixed with interval bounds (``interval_weight``: CROWN-IBP's mix) or
on interval bounds alone (the ``ibp_warmup`` epochs, which run no dual pass), with the clean cross entropy
mixed into the loss (``clean_weight``, CROWN-IBP's ``kappa``); every step's weights come from
:func:`~onnxdual.training.config.interval_weight_at` and :func:`~onnxdual.training.config.clean_weight_at`.

The trained parameters are written back into the initializers of the ONNX graph the run trained
(:mod:`onnxdual.frontend.export`), checked against the trained module in onnxruntime before
``model.onnx`` is written. The run directory's files (checkpoint after every epoch, ``metrics.csv``,
``epoch_XX.onnx`` with ``export_epochs``) are described in :mod:`onnxdual.training.checkpoint`; data-parallel
training under ``torchrun`` in :mod:`onnxdual.training.distributed` (one matrix of random projections per
step is shared by the whole batch, see ``onnxdual.engine.autodual``, so all ranks draw the same).

The network is kept in inference mode throughout: batch normalisation has fixed statistics in its dual
layer (App. B.5), so the forward pass, the bound and the exported ONNX all use the same affine map.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from onnxdual.distributed import DistInfo, all_reduce_sum, barrier, dist_info, gather_objects, resolve_device
from onnxdual.engine.network import robust_loss
from onnxdual.errors import CheckpointError, DivergenceError, InvalidInputError, ModelLoadError
from onnxdual.files import atomic_write, clean_stale_temps, lock_dir, prepare_dir
from onnxdual.frontend.export import Binding, ModelProto, check_onnx_parity, parameter_bindings, trained_model
from onnxdual.frontend.onnx_import import load
from onnxdual.frontend.reader import parse_model
from onnxdual.training.checkpoint import (CHECKPOINT, METRICS, MODEL, check_resumable, data_fingerprint,
                                          epoch_model_name, read_checkpoint, restore, rng_state,
                                          write_checkpoint, write_metrics_csv)
from onnxdual.training.config import (TrainConfig, clean_weight_at, eps_at, interval_weight_at, lr_at,
                                      resolve_eps_start)
from onnxdual.training.distributed import allreduce_gradients, broadcast_module
from onnxdual.training.interfaces import TrainCallback, TrainData, TrainResult
from onnxdual.training.source import (ModelSource, build_template, check_data, check_not_empty,
                                      describe_source, is_onnx_path, reinitialise)


@dataclass
class _Run:
    """The state of a run between its steps: the network and its ONNX template, the optimiser, the random
    generators, the data on the device and the metrics so far."""

    out: Path
    config: TrainConfig
    world: DistInfo
    template: ModelProto
    template_bytes: bytes
    source: str
    net: fx.GraphModule
    bindings: list[Binding]
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    data_gen: torch.Generator
    proj_gen: torch.Generator
    x: Tensor
    y: Tensor
    batch: int
    steps_per_epoch: int
    eps_start: float
    fingerprint: list[float]
    history: list[dict[str, float]]
    start_epoch: int


def train(model_source: ModelSource | None, train_data: TrainData, config: TrainConfig,
          out_dir: str | os.PathLike[str], *, resume: bool = False,
          callbacks: Sequence[TrainCallback] = ()) -> TrainResult:
    """Robustly train a network on ``train_data`` and export it to ``out_dir/model.onnx``.

    Args:
        model_source: an ONNX file (``.onnx`` path; fine-tuned, or re-initialised with ``config.reinit``),
            a built-in architecture name (``"small"``, ``"large"``, ``"resnet"``, ``"wide:K"``,
            ``"deep:K"``; see :mod:`onnxdual.training.architectures`) or a torch module the ONNX exporter
            can export. With ``resume=True`` it may be ``None`` (the checkpoint holds the model).
        train_data: inputs ``x`` (N, C, H, W) and labels ``y``.
        config: the run's settings.
        out_dir: where checkpoint, metrics and model go (created if needed).
        resume: continue the run whose ``checkpoint.pt`` is in ``out_dir``.
        callbacks: progress hooks (:class:`TrainCallback`).

    Raises:
        InvalidInputError: for anything the caller can fix (bad data, a busy or unwritable ``out_dir``,
            nothing to resume, a resume with different settings or data; CheckpointError: a damaged
            checkpoint).
        OutputBusyError: another run holds ``out_dir``.
        DivergenceError: the loss or a weight stopped being finite (the message names epoch and step).
    """
    world = dist_info()
    out = prepare_dir(out_dir)
    # rank 0 holds the run directory's lock: a second run on it fails at once instead of interleaving
    with lock_dir(out) if world.main else nullcontext():
        if world.main:
            clean_stale_temps(out)  # e.g. a killed run's .metrics.csv.PID.HEX.tmp
        return _train_in(out, world, model_source, train_data, config, resume, callbacks)


def _train_in(out: Path, world: DistInfo, model_source: ModelSource | None, train_data: TrainData,
              config: TrainConfig, resume: bool, callbacks: Sequence[TrainCallback]) -> TrainResult:
    """:func:`train` in the prepared (and, on rank 0, locked) directory ``out``."""
    t0 = time.perf_counter()
    check_not_empty(train_data)
    from onnxdual.certify.run import check_domain  # the one domain rule (certify's); loads pandas lazily

    check_domain(train_data.x, config.effective_clip)
    fingerprint = data_fingerprint(train_data)
    ckpt = _open_checkpoint(out, config, model_source, fingerprint, world, resume)
    run = _start(model_source, train_data, config, out, ckpt, fingerprint, world)
    for epoch in range(run.start_epoch, config.epochs):
        row = _train_epoch(run, epoch, callbacks)
        _save_epoch(run, epoch)
        if world.active:
            barrier()
        for cb in callbacks:
            cb.on_epoch(row)
    model_path = _export(run, train_data.x[:16],
                         rewrite_metrics=ckpt is not None and run.start_epoch >= config.epochs)
    return TrainResult(out, model_path, run.history, run.net, config, [b.tensor for b in run.bindings],
                       resumed_from_epoch=run.start_epoch if ckpt is not None else None,
                       seconds=time.perf_counter() - t0)


def _open_checkpoint(out: Path, config: TrainConfig, model_source: ModelSource | None,
                     fingerprint: list[float], world: DistInfo, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (checked to continue exactly), or ``None`` for a fresh run in a
    directory that holds no run."""
    ckpt_path = out / CHECKPOINT
    if resume:
        ckpt = read_checkpoint(ckpt_path)
        source = describe_source(model_source) if model_source is not None else None
        check_resumable(ckpt, out, config, source, fingerprint, world.world_size)
        return ckpt
    if ckpt_path.exists():
        raise InvalidInputError(f"{out} already holds a training run ({CHECKPOINT}); resume it or choose "
                                "another output directory")
    if model_source is None:
        raise InvalidInputError("no model given to train")
    return None


def _network(model_source: ModelSource | None, train_data: TrainData, config: TrainConfig,
             ckpt: Mapping[str, Any] | None,
             device: torch.device) -> tuple[ModelProto, str, fx.GraphModule, list[Binding]]:
    """The ONNX template the run trains, how it names its source, the loaded module on ``device`` and where
    each trained tensor goes in the template."""
    input_shape = tuple(train_data.x.shape[1:])
    if ckpt is not None:
        try:
            template = parse_model(ckpt["template"], f"the template model of checkpoint {CHECKPOINT}")
        except ModelLoadError as exc:
            raise CheckpointError(f"checkpoint {CHECKPOINT} is damaged: {exc}") from None
        source = ckpt["source"]
    else:
        assert model_source is not None
        n_classes = int(getattr(train_data, "num_classes", 0) or int(train_data.y.max()) + 1)
        template = build_template(model_source, input_shape, n_classes, config)
        source = describe_source(model_source)
    net = load(template)
    net.to(device).eval()  # inference mode throughout: BN with fixed statistics (App. B.5), no dropout
    if config.reinit and ckpt is None and not isinstance(model_source, nn.Module) and \
            is_onnx_path(model_source):  # type: ignore[arg-type]
        reinitialise(net, config.seed)
    bindings = parameter_bindings(template, net)
    check_data(net, train_data)
    return template, source, net, bindings


def _start(model_source: ModelSource | None, train_data: TrainData, config: TrainConfig, out: Path,
           ckpt: Mapping[str, Any] | None, fingerprint: list[float], world: DistInfo) -> _Run:
    """Everything the first epoch needs, restored from ``ckpt`` when resuming."""
    device = resolve_device(config.device)
    template, source, net, bindings = _network(model_source, train_data, config, ckpt, device)
    params = [p for p in net.parameters()]
    n = train_data.x.shape[0]
    batch = min(config.batch_size, n)
    if world.world_size > batch:
        raise InvalidInputError(f"a global batch of {batch} example(s) cannot be shared by "
                                f"{world.world_size} processes; use a larger batch size or fewer processes")
    steps_per_epoch = n // batch  # the last partial batch of each (reshuffled) epoch is dropped
    eps_start = resolve_eps_start(config, tuple(train_data.x.shape[1:]), getattr(train_data, "name", ""))
    optimizer = _make_optimizer(config, params)
    data_gen = torch.Generator().manual_seed(config.seed)
    proj_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if ckpt is not None:
        restore(ckpt, out / CHECKPOINT, net, optimizer, data_gen, proj_gen, world.rank)
        history = [dict(r) for r in ckpt["history"]]
        start_epoch = int(ckpt["epoch"])
    elif world.active:
        broadcast_module(net)  # identical initial weights on every rank
    return _Run(out=out, config=config, world=world, template=template,
                template_bytes=template.SerializeToString() if world.main else b"", source=source, net=net,
                bindings=bindings, params=params, optimizer=optimizer, data_gen=data_gen, proj_gen=proj_gen,
                x=train_data.x.to(device, torch.float32), y=train_data.y.to(device, torch.int64), batch=batch,
                steps_per_epoch=steps_per_epoch, eps_start=eps_start, fingerprint=fingerprint,
                history=history, start_epoch=start_epoch)


def _make_optimizer(config: TrainConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.learning_rate)
    return torch.optim.SGD(params, lr=config.learning_rate, momentum=config.momentum)


def _train_epoch(run: _Run, epoch: int, callbacks: Sequence[TrainCallback]) -> dict[str, float]:
    """One pass over a fresh permutation of the data (0-based ``epoch``); returns its metrics row, which is
    also appended to the run's history."""
    config, world, steps = run.config, run.world, run.steps_per_epoch
    epoch_t0 = time.perf_counter()
    lr = lr_at(config, epoch)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    # the order is drawn where the data generator lives (the CPU): the same on every device
    perm = torch.randperm(run.x.shape[0], generator=run.data_gen, device=run.data_gen.device)
    perm = perm.to(run.x.device)
    sums = torch.zeros(4, dtype=torch.float64, device=run.x.device)  # robust CE, robust err, clean err, count
    for cb in callbacks:
        cb.on_epoch_start(epoch + 1, config.epochs, steps)
    eps = eps_at(config, epoch * steps, steps, run.eps_start)
    for s in range(steps):
        step = epoch * steps + s
        eps = eps_at(config, step, steps, run.eps_start)
        weight, kappa = interval_weight_at(config, step, steps), clean_weight_at(config, step, steps)
        index = perm[s * run.batch:(s + 1) * run.batch].tensor_split(world.world_size)[world.rank]
        local = _train_step(run, index, eps, weight, kappa)
        _check_finite(run, local, epoch, s)
        sums += local
        if callbacks:
            k = max(1.0, float(index.shape[0]))  # the shard's size, without reading the device
            step_metrics = {"epoch": epoch + 1, "step": step + 1, "eps": eps, "lr": lr,
                            "interval_weight": weight, "clean_weight": kappa,
                            "robust_loss": float(local[0]) / k,
                            "robust_err_estimate": float(local[1]) / k, "clean_err": float(local[2]) / k}
            for cb in callbacks:
                cb.on_step(s + 1, steps, step_metrics)
    if world.active:
        all_reduce_sum(sums)
    count = max(1.0, float(sums[3]))
    row = {"epoch": epoch + 1, "robust_loss": float(sums[0]) / count,
           "robust_err_estimate": float(sums[1]) / count, "clean_err": float(sums[2]) / count,
           "eps": eps, "lr": lr, "seconds": round(time.perf_counter() - epoch_t0, 3)}
    run.history.append(row)
    return row


def _train_step(run: _Run, index: Tensor, eps: float, interval_weight: float = 0.0,
                clean_weight: float = 0.0) -> Tensor:
    """One optimiser step on this rank's shard ``index`` of the global batch, on the dual bound mixed with
    interval bounds by ``interval_weight`` (:func:`~onnxdual.engine.network.robust_loss`), and the clean
    cross entropy mixed in by ``clean_weight``; returns the shard's summed robust CE, robust error estimate,
    clean error and example count (the robust CE is the bound's alone, without the clean term)."""
    xb, yb = run.x[index], run.y[index]
    run.optimizer.zero_grad(set_to_none=True)
    ce, err = robust_loss(run.net, eps, xb, yb, run.config.norm, run.config.proj,
                          clip=run.config.effective_clip, generator=run.proj_gen, size_average=False,
                          interval_weight=interval_weight)
    # sum over this rank's shard / global batch: summed over ranks it is the global mean (§3)
    loss = ce.sum() / run.batch
    if clean_weight > 0:  # kappa CE(f(x), y) + (1 - kappa) CE(-J, y), as CROWN-IBP
        clean_ce = F.cross_entropy(run.net(xb).flatten(1), yb, reduction="sum") / run.batch
        loss = clean_weight * clean_ce + (1 - clean_weight) * loss
    loss.backward()
    if run.world.active:
        allreduce_gradients(run.params)
    run.optimizer.step()
    with torch.no_grad():
        clean = (run.net(xb).flatten(1).argmax(1) != yb).to(torch.float64)
        return torch.stack([ce.detach().sum().double(), err.detach().sum().double(), clean.sum(),
                            torch.tensor(float(yb.shape[0]), dtype=torch.float64, device=xb.device)])


def _check_finite(run: _Run, local: Tensor, epoch: int, s: int) -> None:
    """Stop at the step where the loss or a weight stops being finite (a diverging run, e.g. a learning rate
    far too large), before anything of it is saved: the last checkpoint, of the last finished epoch, stays.
    The weights are the same on every rank (gradients are all-reduced), so every rank stops at the same step;
    the loss, which is per rank, is checked only in a single-process run."""
    with torch.no_grad():
        # a sum is non-finite when any term is (or when the weights overflow float32 together)
        checks = [p.sum() for p in run.params] + ([] if run.world.active else [local[0]])
        if bool(torch.isfinite(torch.stack(checks)).all()):
            return
    steps = run.steps_per_epoch
    kept = (f"the checkpoint of epoch {epoch} in {run.out} is kept" if epoch > 0
            else "no epoch finished, so nothing was saved")
    raise DivergenceError(f"training diverged at epoch {epoch + 1}, step {s + 1} of {steps} (global step "
                          f"{epoch * steps + s + 1}): the robust loss or the weights are no longer finite; "
                          f"{kept}; try a smaller learning rate (--lr, now {lr_at(run.config, epoch):g})")


def _save_epoch(run: _Run, epoch: int) -> None:
    """Checkpoint and metrics after 0-based ``epoch`` (rank 0 writes; every rank's RNG state is saved)."""
    rank_states = [rng_state(run.proj_gen)]
    if run.world.active:
        rank_states = gather_objects(rank_states[0], run.world)
    if not run.world.main:
        return
    write_checkpoint(run.out / CHECKPOINT, epoch=epoch + 1, step=(epoch + 1) * run.steps_per_epoch,
                     model=run.net.state_dict(), optimizer=run.optimizer.state_dict(),
                     template=run.template_bytes, source=run.source, config=run.config,
                     fingerprint=run.fingerprint, world_size=run.world.world_size,
                     data_order=run.data_gen.get_state(), rank_states=rank_states, history=run.history)
    write_metrics_csv(run.out / METRICS, run.history)
    if run.config.export_epochs:
        atomic_write(run.out / epoch_model_name(epoch + 1),
                     trained_model(run.template, run.net, run.bindings).SerializeToString())


def _export(run: _Run, parity_inputs: Tensor, rewrite_metrics: bool) -> Path:
    """Write ``model.onnx`` (rank 0, after the onnxruntime parity check on ``parity_inputs``); with
    ``rewrite_metrics`` (a finished run resumed) also ``metrics.csv``."""
    model_path = run.out / MODEL
    if run.world.main:
        with torch.no_grad():
            logits = run.net(parity_inputs.to(run.x.device, torch.float32))
        if not bool(torch.isfinite(logits).all()):
            raise DivergenceError(f"training diverged: the trained network's outputs overflow float32 on the "
                                  f"training inputs; the checkpoint in {run.out} is kept but no model is "
                                  f"exported; try a smaller learning rate (--lr)")
        final = trained_model(run.template, run.net, run.bindings)
        check_onnx_parity(final, run.net, parity_inputs)
        atomic_write(model_path, final.SerializeToString())
        if rewrite_metrics:
            write_metrics_csv(run.out / METRICS, run.history)
    if run.world.active:
        barrier()
    return model_path


__all__ = ["train"]
