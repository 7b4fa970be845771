"""``onnxdual train``: robustly train a model or a cascade, then certify it on the test split.

A thin layer over :mod:`onnxdual.training`: the options are declared once (:data:`OPTIONS`) and turned into
the library's :class:`~onnxdual.training.config.TrainConfig` plus the command's own :class:`CommandOptions`
by :func:`parse_options`; the command shows progress and prints a summary. Under
``torchrun --nproc_per_node N onnxdual train ...`` the command joins the process group and trains
data-parallel; only rank 0 writes files, evaluates and prints.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from onnxdual_cli.allocator import keep_freed_blocks
from onnxdual_cli.config import config_option
from onnxdual_cli import tensorboard
from onnxdual_cli.errors import SOUNDNESS_VIOLATION, UserError, user_errors
from onnxdual_cli.options import (deprecated_alias, device_option, given, parse_clip, parse_eps, seed_option,
                                  take_alias, threads_option, warn)

from onnxdual import defaults
from onnxdual.training.architectures import MAX_K
from onnxdual.training.config import LIMITS

if TYPE_CHECKING:  # pragma: no cover
    from onnxdual.training.config import TrainConfig

#: the most cascade stages (Alg. 2 needs few; the paper uses up to 7) and PGD steps of the evaluation
MAX_STAGES = 100
MAX_PGD_STEPS = 100_000

#: every argument and option of ``onnxdual train``, in the order ``--help`` lists them
OPTIONS = (
    config_option,
    click.argument("model", required=False, type=click.Path(path_type=Path)),
    click.option("--arch", default=None,
                 help=f"Built-in architecture instead of MODEL: small, large, resnet, wide:K, deep:K "
                      f"(K from 1 to {MAX_K}). [default: small]"),
    click.option("--data", type=click.Path(path_type=Path), default=None,
                 help="MNIST/CIFAR-10 directory (standard files) or .npz with x, y; trains on the train "
                      "split and certifies the test split. [required]"),
    click.option("--test-data", type=click.Path(path_type=Path), default=None,
                 help="Data to certify at the end. [default: the test split of --data; for an .npz, the "
                      "same file]"),
    click.option("--eps", "eps_text", default=f"{defaults.EPS:g}", show_default=True,
                 help="Final perturbation radius."),
    click.option("--norm", type=click.Choice(["linf", "l2"]), default=defaults.NORM, show_default=True),
    click.option("--projections", "proj_text", default=str(defaults.TRAIN_PROJECTIONS), show_default=True,
                 metavar="R|exact",
                 help=f"Random projections R for the training bound (Alg. 1; 1 to {LIMITS['proj']}; the k of "
                      "certify's --projections k,m), or 'exact'."),
    deprecated_alias("--proj", "--projections"),
    click.option("--epochs", type=click.IntRange(1, LIMITS["epochs"]), default=defaults.EPOCHS,
                 show_default=True),
    click.option("--batch-size", type=click.IntRange(1, LIMITS["batch_size"]), default=defaults.TRAIN_BATCH_SIZE,
                 show_default=True),
    click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="Learning rate. [default: 1e-3 for adam, 0.05 for sgd]"),
    click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default=defaults.OPTIMIZER,
                 show_default=True),
    click.option("--eps-start", "eps_start_text", default=None,
                 help="Radius of the first step, ramped linearly to --eps. "
                      "[default: 0.01 MNIST, 0.001 CIFAR]"),
    click.option("--ramp-epochs", type=click.IntRange(0, LIMITS["ramp_epochs"]), default=defaults.RAMP_EPOCHS,
                 show_default=True, help="Epochs over which eps grows linearly from --eps-start to --eps."),
    click.option("--ibp-weight", "ibp_weight_text", default="0", show_default=True, metavar="W|START,END",
                 help="Beyond the paper: train on (1-W) x the dual bound + W x interval bounds (IBP), "
                      "the mix of CROWN-IBP (Zhang et al. 2020; its beta is 1-W); START,END ramps W "
                      "linearly over --ramp-epochs (CROWN-IBP's schedule: 0,1). W in [0, 1]; 1: IBP "
                      "training."),
    click.option("--ibp-warmup", type=click.IntRange(0, LIMITS["ibp_warmup"]), default=0, show_default=True,
                 metavar="EPOCHS",
                 help="Beyond the paper: train the first EPOCHS epochs on interval bounds alone (no dual "
                      "pass, so about the cost of a plain step) while eps ramps as usual, then on the dual "
                      "bound (or --ibp-weight's mix)."),
    click.option("--clean-weight", "clean_weight_text", default="0", show_default=True, metavar="K|START,END",
                 help="Beyond the paper: add K x the clean cross entropy to (1-K) x the robust loss "
                      "(CROWN-IBP's kappa; keeps interval training from collapsing early); START,END "
                      "ramps it over --ramp-epochs (IBP's schedule: 1,0.5)."),
    seed_option,
    device_option(),
    threads_option("torch's default (all cores)"),
    click.option("--clip", "clip_text", default="none" if defaults.CLIP is None else "%g,%g" % defaults.CLIP,
                 show_default=True,
                 help="Data domain 'lo,hi' intersected with l-inf balls; 'none' to disable; ignored with "
                      "--norm l2."),
    click.option("--normalize", "normalize_text", default=None,
                 help="Per-channel MEAN:STD layer built into --arch (e.g. 0.1307:0.3081); recorded in "
                      "manifests. [default: none]"),
    click.option("--reinit", is_flag=True, help="Re-initialise MODEL's weights instead of fine-tuning them."),
    click.option("--cascade", "stages", type=click.IntRange(1, MAX_STAGES), default=1, show_default=True,
                 help="Train a cascade of up to K stages (Alg. 2)."),
    click.option("--out", "out_text", type=click.Path(), default="onnxdual-train", show_default=True,
                 help="Output directory (checkpoint, metrics.csv, model.onnx or cascade.json, report/)."),
    click.option("--resume", is_flag=True, help="Continue the interrupted run in --out."),
    click.option("--limit", type=click.IntRange(min=1), default=None,
                 help="Train on the first N examples. [default: all]"),
    click.option("--eval-limit", type=click.IntRange(min=1), default=None,
                 help="Certify the first N test examples. [default: all]"),
    click.option("--no-eval", is_flag=True, help="Skip the final certification of the test split."),
    click.option("--pgd-steps", type=click.IntRange(0, MAX_PGD_STEPS), default=defaults.PGD_STEPS,
                 show_default=True, help="Attack steps per example of the final certification."),
    click.option("--epoch-onnx", is_flag=True, help="Also export epoch_XX.onnx after every epoch."),
    click.option("--tensorboard", "tensorboard_dir", type=click.Path(path_type=Path, file_okay=False),
                 default=None,
                 help="Also log the training metrics for TensorBoard into DIR (pip install "
                      "'onnxdual[tensorboard]'). [default: off]"),
    click.option("--quiet", is_flag=True, help="No progress bars and no summary."),
    click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of text."),
)


def train_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Attach :data:`OPTIONS` to ``command`` (as the same decorators stacked in that order would)."""
    for option in reversed(OPTIONS):
        command = option(command)
    return command


@dataclass(frozen=True)
class CommandOptions:
    """What the command does around the library's run (the run's settings are the ``TrainConfig``)."""

    #: the model to train: an ONNX file, a built-in architecture name, or ``None`` (a resumed run's own)
    source: Path | str | None
    data: Path
    test_data: Path | None
    stages: int
    out: Path
    resume: bool
    limit: int | None
    eval_limit: int | None
    no_eval: bool
    pgd_steps: int
    quiet: bool
    #: ``--device`` as given (``auto``, ``cpu``, ``cuda``); the config gets the device it resolves to
    device: str
    #: ``--threads`` (``None``: torch's default), ``--tensorboard DIR``, ``--json``
    threads: int | None = None
    tensorboard: Path | None = None
    as_json: bool = False


def _parse_proj(text: str, flag: str = "--projections") -> int | None:
    if text.strip().lower() in ("exact", "none"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"{flag} {text!r}: give a number of random projections (e.g. 50) "
                        "or 'exact'") from None
    if not 1 <= value <= LIMITS["proj"]:
        raise UserError(f"{flag} must lie in 1..{LIMITS['proj']} (or 'exact'), got {value}")
    return value


def _parse_weight(text: str, flag: str) -> tuple[float, float]:
    """``W`` or ``START,END``, each in [0, 1]."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or not all(0 <= v <= 1 for v in values):
        raise UserError(f"{flag} {text!r}: give a weight or START,END, each in [0, 1] (e.g. 0,1)")
    return (values[0], values[-1])


def _warn_schedule(o: Mapping[str, Any], config: TrainConfig) -> None:
    """One line each where the run will not do what the options seem to ask: training that ends before the
    eps ramp reaches --eps, an IBP warm-up that lasts the whole run, and a --clip that --norm l2 ignores."""
    if config.epochs < config.ramp_epochs:
        warn(f"--epochs {config.epochs} is shorter than --ramp-epochs {config.ramp_epochs}: training stops at "
             f"{config.epochs / config.ramp_epochs:.0%} of the eps ramp and never trains at --eps "
             f"{config.eps:g}")
    if config.ibp_warmup >= config.epochs:
        warn(f"--ibp-warmup {config.ibp_warmup} covers every epoch: the run trains on interval bounds only "
             "and never on the dual bound")
    default_clip = "none" if defaults.CLIP is None else "%g,%g" % defaults.CLIP
    ctx = click.get_current_context(silent=True)
    explicit = given(ctx, "clip_text") if ctx is not None and "clip_text" in ctx.params \
        else o["clip_text"] != default_clip
    if config.norm == "l2" and config.clip is not None and explicit:
        warn(f"--clip {o['clip_text']} is ignored with --norm l2 (only l-inf balls are intersected with the "
             "data domain)")


def _check_arch(name: str) -> None:
    """Fail fast on an unknown architecture name, before any data is read (a tiny input builds in no time)."""
    from onnxdual.training.architectures import build_architecture

    build_architecture(name, (1, 4, 4))


def _parse_normalize(text: str | None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``MEAN:STD`` with one value per channel each, comma-separated (e.g. ``0.1307:0.3081``)."""
    if text is None or text.strip().lower() == "none":
        return None
    try:
        mean_text, std_text = text.split(":")
        mean = tuple(float(v) for v in mean_text.split(","))
        std = tuple(float(v) for v in std_text.split(","))
    except ValueError:
        raise UserError(f"--normalize {text!r}: give MEAN:STD per channel, e.g. 0.1307:0.3081 or "
                        "0.4914,0.4822,0.4465:0.2470,0.2435,0.2616") from None
    if len(mean) != len(std) or not all(s > 0 for s in std):
        raise UserError(f"--normalize {text!r}: need as many positive std values as means")
    return mean, std


def parse_options(o: Mapping[str, Any]) -> tuple[TrainConfig, CommandOptions]:
    """Check the parsed command line (the values of :data:`OPTIONS`, by parameter name) and split it into the
    library's ``TrainConfig`` (device: ``--device`` as given) and the command's :class:`CommandOptions`.
    Raises :class:`UserError` for the first bad value, in the order the options are listed."""
    from onnxdual.training.config import TrainConfig

    model: Path | None = o["model"]
    arch: str | None = o["arch"]
    data: Path | None = o["data"]
    if model is not None and arch is not None:
        raise UserError("give either MODEL or --arch, not both")
    if data is None:
        raise UserError("--data is required: an MNIST/CIFAR-10 directory or a .npz file with x and y")
    if not data.exists():
        raise UserError(f"data not found: {data}")
    if o["test_data"] is not None and not o["test_data"].exists():
        raise UserError(f"test data not found: {o['test_data']}")
    if not o["out_text"].strip():
        raise UserError("--out must not be empty: give the output directory (e.g. --out onnxdual-train)")
    eps = parse_eps(o["eps_text"])
    eps_start = parse_eps(o["eps_start_text"], "--eps-start") if o["eps_start_text"] is not None else None
    proj_text, proj_flag = take_alias(o, "proj_text", "--proj", "--projections",
                                      str(defaults.TRAIN_PROJECTIONS))
    proj = _parse_proj(proj_text, proj_flag)
    clip = parse_clip(o["clip_text"])
    normalize = _parse_normalize(o["normalize_text"])
    interval_weight = _parse_weight(o.get("ibp_weight_text", "0"), "--ibp-weight")
    clean_weight = _parse_weight(o.get("clean_weight_text", "0"), "--clean-weight")
    if model is None and (arch is not None or not o["resume"]):
        arch = arch or "small"
        _check_arch(arch)
    elif model is not None and not model.is_file():
        raise UserError(f"model file not found: {model}")
    if o["reinit"] and model is None:
        raise UserError("--reinit applies to a given MODEL (built-in architectures always start fresh)")
    if normalize is not None and model is not None:
        raise UserError("--normalize applies to --arch (a given MODEL has its own preprocessing)")
    config = TrainConfig(eps=eps, norm=o["norm"], proj=proj, epochs=o["epochs"],
                         batch_size=o["batch_size"], optimizer=o["optimizer"], lr=o["lr"],
                         eps_start=eps_start, ramp_epochs=o["ramp_epochs"], seed=o["seed"],
                         device=o["device"], clip=clip, reinit=o["reinit"], normalize=normalize,
                         export_epochs=o["epoch_onnx"], interval_weight=interval_weight,
                         ibp_warmup=o.get("ibp_warmup", 0), clean_weight=clean_weight)
    _warn_schedule(o, config)
    command = CommandOptions(source=model if model is not None else arch, data=data, test_data=o["test_data"],
                             stages=o["stages"], out=Path(o["out_text"]), resume=o["resume"], limit=o["limit"],
                             eval_limit=o["eval_limit"], no_eval=o["no_eval"], pgd_steps=o["pgd_steps"],
                             quiet=o["quiet"], device=o["device"], threads=o.get("threads_text"),
                             tensorboard=o.get("tensorboard_dir"), as_json=bool(o.get("as_json")))
    return config, command


class _Progress:
    """tqdm bars on stderr: one per epoch (and per cascade stage), one for the evaluation."""

    def __init__(self, enabled: bool):
        from onnxdual.training.cascade import CascadeCallback

        self.enabled = enabled
        self.bar: Any = None
        self.prefix = ""
        outer = self

        class Callback(CascadeCallback):
            def on_stage_start(self, stage: int, stages: int, n_examples: int) -> None:
                outer.prefix = f"stage {stage}/{stages} ({n_examples} ex) "

            def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
                outer._open(steps, f"{outer.prefix}epoch {epoch}/{epochs}", "step")

            def on_step(self, i: int, n: int, metrics: Mapping[str, float]) -> None:
                if outer.bar is not None:
                    outer.bar.set_postfix(loss=f"{metrics['robust_loss']:.3f}",
                                          err=f"{metrics['robust_err_estimate']:.3f}",
                                          eps=f"{metrics['eps']:.4g}", refresh=False)
                    outer.bar.update(1)

            def on_epoch(self, metrics: Mapping[str, float]) -> None:
                outer.close()

        self.callback = Callback()

    def _open(self, total: int, desc: str, unit: str) -> None:
        self.close()
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def eval_progress(self, total: int):
        self._open(total, "certify test set", "ex")

        def update(n: int) -> None:
            if self.bar is not None:
                self.bar.update(n)

        return update

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _prepare_out(opts: CommandOptions) -> Path:
    """The output directory, created; with ``--resume`` it must hold a run."""
    from onnxdual.certify.manifest import MANIFEST
    from onnxdual.files import prepare_dir
    from onnxdual.training.checkpoint import CHECKPOINT

    out = prepare_dir(opts.out)
    if opts.resume and not any((out / name).exists() for name in (CHECKPOINT, MANIFEST, "stage1")):
        raise UserError(f"--resume: nothing to resume in {out} (no {CHECKPOINT})")
    return out


def _train(opts: CommandOptions, config: TrainConfig, out: Path, progress: _Progress, show: bool,
           summary: dict[str, Any], callbacks: list[Any]) -> Path:
    """Train the model (or the cascade) and print what it reached (``summary`` gets it too); returns the path
    of ``model.onnx`` (or ``cascade.json``)."""
    from onnxdual.data import load_dataset
    from onnxdual.training.cascade import train_cascade
    from onnxdual.training.loop import train

    train_data = load_dataset(opts.data, split="train", limit=opts.limit)
    try:
        if opts.stages > 1:
            cascade = train_cascade(opts.stages, opts.source, train_data, config, out, resume=opts.resume,
                                    callbacks=[progress.callback, *callbacks])
            summary["stopped_early"] = cascade.manifest.get("stop_reason") if cascade.stopped_early else None
            if show and cascade.stopped_early:
                click.echo(f"cascade stopped early: {cascade.manifest['stop_reason']}")
            return cascade.manifest_path
        run = train(opts.source, train_data, config, out, resume=opts.resume,
                    callbacks=[progress.callback, *callbacks])
        if run.history:
            last = run.history[-1]
            summary["trained"] = dict(last)
            if show:
                click.echo(f"trained {last['epoch']} epoch(s): robust loss {last['robust_loss']:.4f}, "
                           f"robust error (training estimate) {last['robust_err_estimate']:.2%}, "
                           f"clean error {last['clean_err']:.2%}")
        return run.model_path
    finally:
        progress.close()


def _evaluate(opts: CommandOptions, config: TrainConfig, trained_path: Path, out: Path, progress: _Progress,
              show: bool, summary: dict[str, Any]) -> None:
    """Certify the trained model on the test split, write ``report/`` and print the result (``summary`` gets
    it too); exit with :data:`SOUNDNESS_VIOLATION` when an attack beats a certificate."""
    from onnxdual.data import load_dataset
    from onnxdual.training import evaluation

    test_set = load_dataset(opts.test_data if opts.test_data is not None else opts.data, split="test",
                            limit=opts.eval_limit)
    meta = {"command": "onnxdual " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "trained_with": config.to_dict()}
    try:
        result = evaluation.evaluate(trained_path, test_set, eps=config.eps, norm=config.norm,
                                     clip=config.clip, pgd_steps=opts.pgd_steps, seed=config.seed,
                                     device=config.device, report_dir=out / "report", meta=meta,
                                     progress=progress.eval_progress(test_set.x.shape[0]) if show else None)
    except evaluation.SoundnessError as exc:
        progress.close()
        click.echo(f"onnxdual: error: {exc}", err=True)
        sys.exit(SOUNDNESS_VIOLATION)
    progress.close()
    o = result.overall
    summary["test"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in dict(o).items()}
    summary["files"]["report"] = str(result.paths.get("report_html", out / "report"))
    if show:
        label = "ℓ∞" if config.norm == "linf" else "ℓ2"
        click.echo(f"test eps={config.eps:g} ({label}): certified {o['certified_accuracy']:.1%}, "
                   f"PGD {o['pgd_accuracy']:.1%}, clean {o['clean_accuracy']:.1%} of {int(o['n'])} examples")
        if getattr(result.paths, "replaced", False):
            click.echo(f"onnxdual: replaced the previous report in {out / 'report'}", err=True)
        click.echo(f"report: {summary['files']['report']}")


def _training_report(opts: CommandOptions, config: TrainConfig, out: Path, trained_path: Path, show: bool) -> Path:
    """``OUT/training.html``: the curves of ``metrics.csv`` (every stage's, for a cascade), next to the
    certification report ``OUT/report/`` the evaluation writes."""
    from onnxdual.reports.training import TRAINING_REPORT, read_metrics, write_training_report

    meta = {"model": str(trained_path), "command": "onnxdual " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "config": config.to_dict(), "certify_report": None if opts.no_eval else "report/report.html"}
    path = write_training_report(out / TRAINING_REPORT, read_metrics(out), meta)
    if show:
        click.echo(f"training report: {path}")
    return path


@click.command()
@train_options
@user_errors
def train_command(**options: Any) -> None:
    """Robustly train MODEL (an ONNX file) or a built-in --arch on --data, then certify it.

    Implements the training of Wong et al. 2018 (random projections, eps ramp, App. G schedule) and robust
    cascades (--cascade K). Writes OUT/model.onnx (or OUT/cascade.json with stageI.onnx), metrics.csv,
    checkpoint.pt, config.yaml (the resolved options) and a certification report of the test split in
    OUT/report/ (exit code 3 if an attack beats a certificate).

    Data parallel on N processes: torchrun --nproc_per_node N --no-python onnxdual train ..."""
    import json

    from onnxdual.distributed import join_torchrun, shutdown_distributed
    from onnxdual_cli.config import write_resolved

    config, opts = parse_options(options)
    keep_freed_blocks()
    if opts.tensorboard is not None:
        tensorboard.summary_writer_class()  # not installed: say so before any work
    if opts.threads is not None:
        import torch

        torch.set_num_threads(opts.threads)
    out = _prepare_out(opts)
    dev, world = join_torchrun(opts.device)  # under torchrun: this rank's device and place
    config = replace(config, device=str(dev))
    show = not opts.quiet and not opts.as_json and world.main
    summary: dict[str, Any] = {"config": config.to_dict(), "files": {}}
    if world.main:  # the options as resolved (config file, then command line), before any work
        proj = take_alias(options, "proj_text", "--proj", "--projections", str(defaults.TRAIN_PROJECTIONS))[0]
        summary["files"]["config"] = str(write_resolved(out, params={**options, "proj_text": proj}))
    wants_tensorboard = opts.tensorboard is not None and world.main
    callbacks = [tensorboard.tensorboard_callback(opts.tensorboard)] if wants_tensorboard else []
    progress = _Progress(enabled=show and sys.stderr.isatty())
    try:
        trained_path = _train(opts, config, out, progress, show, summary, callbacks)
    finally:
        for callback in callbacks:
            callback.close()
    summary["files"]["model"] = str(trained_path)
    if show:
        click.echo(f"model: {trained_path}")
    if world.main:
        summary["files"]["training_report"] = str(_training_report(opts, config, out, trained_path, show))
    shutdown_distributed()
    if not opts.no_eval and world.main:
        _evaluate(opts, config, trained_path, out, progress, show, summary)
    if opts.as_json and world.main:
        click.echo(json.dumps(summary, indent=2, default=str))


__all__ = ["train_command", "parse_options", "CommandOptions", "OPTIONS", "SOUNDNESS_VIOLATION"]


if __name__ == "__main__":  # ``torchrun --nproc_per_node N -m onnxdual_cli.train ...``
    train_command(prog_name="onnxdual train")
