"""``onnxdual certify``: certify a model or cascade on a data set and write the report."""

from __future__ import annotations

import json
import shlex
import sys
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import click

import onnxdual
from onnxdual_cli.errors import SOUNDNESS_VIOLATION, USER_ERROR, user_errors
from onnxdual import defaults
from onnxdual_cli.config import config_option, write_resolved
from onnxdual_cli.options import (device_option, given, parse_clip, parse_eps_list, parse_projections,
                                  relaxation_option, seed_option, setup_torch, threads_option, warn)


def default_model() -> Path:
    """The robust MNIST model shipped inside the package (see onnxdual/assets/README.md)."""
    return Path(str(resources.files("onnxdual") / "assets" / "mnist_small_robust.onnx"))


def _non_empty_out(value: str) -> Path:
    """Refuse an empty ``--out`` before any work (as a path it would mean the current directory)."""
    if not value.strip():
        raise click.BadParameter("give a folder for the report (an empty path would write into the current "
                                 "directory)", param_hint="'--out'")
    return Path(value)


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="ex", file=sys.stderr, dynamic_ncols=True, desc="certify")

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@click.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@config_option
@click.option("--eps", "eps_text", default=f"{defaults.EPS:g}", show_default=True,
              help="Perturbation radius; several at once as a comma-separated list.")
@click.option("--norm", type=click.Choice(["linf", "l2"]), default=defaults.NORM, show_default=True)
@click.option("--clip", "clip_text", default="none" if defaults.CLIP is None else "%g,%g" % defaults.CLIP,
              show_default=True, help="Data domain 'lo,hi' intersected with l-inf balls (pixels in [0,1]); "
                                      "'none' to disable; ignored with --norm l2.")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="MNIST/CIFAR-10 directory (standard files) or .npz with x, y. [default: the shipped MNIST "
                   "sample]")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Use the first N examples. [default: all]")
@click.option("--batch-size", type=click.IntRange(min=1, max=100_000), default=defaults.CERTIFY_BATCH_SIZE,
              show_default=True,
              help="Examples bounded at once (1 to 100000).")
@device_option()
@click.option("--out", type=click.Path(), default="onnxdual-report", show_default=True,
              callback=lambda ctx, param, value: _non_empty_out(value),
              help="Directory for examples.csv, summary.csv, summary.json and report.html.")
@seed_option
@click.option("--pgd-steps", type=click.IntRange(min=0, max=100_000), default=defaults.PGD_STEPS,
              show_default=True,
              help="Attack steps per example (0 to 100000).")
@click.option("--pgd-restarts", type=click.IntRange(min=1, max=1000), default=defaults.PGD_RESTARTS,
              show_default=True,
              help="Attack restarts (1 to 1000).")
@click.option("--probable", "delta", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Certify with bounds that hold with probability >= 1 - DELTA per example (random "
                   "projections, App. E) instead of exact ones: for networks too large for exact bounds. "
                   "[default: exact bounds]")
@click.option("--projections", "projections_text", default="%d,%d" % defaults.PROJECTIONS, show_default=True,
              help="With --probable: k,m = columns per geometric estimate, estimates per maximum.")
@click.option("--quiet", is_flag=True, help="No progress bar and no text summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of text.")
@relaxation_option(defaults.RELAXATION, auto=True)
@click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), default=defaults.TIME_BUDGET,
              show_default=True,
              help="Seconds per example the automatic --relaxation may spend (measured on the first examples).")
@click.option("--resume/--no-resume", default=None,
              help="Continue the interrupted run whose progress --out holds (every finished batch is saved to "
                   "certify-progress.jsonl as the run goes; same model, data and options); --no-resume "
                   "discards it. [default: refuse to overwrite an interrupted run's progress]")
@click.option("--allow-stages-outside", is_flag=True,
              help="Accept cascade stage files outside the manifest's folder (refused by default).")
@threads_option("torch's default (all cores)")
@user_errors
def certify_command(model, eps_text, norm, clip_text, data, split, limit, batch_size, device, out, seed,
                    pgd_steps, pgd_restarts, delta, projections_text, quiet, as_json, relaxation, time_budget,
                    resume, allow_stages_outside, threads_text):
    """Certify MODEL (an ONNX file or a cascade manifest .json) against perturbations of size --eps.

    Without MODEL, the robust MNIST model shipped with onnxdual is used."""
    import torch  # here, not at the top: 'onnxdual certify --help' needs neither torch nor pandas

    from onnxdual.certify import CertifySettings, certify, load_stages
    from onnxdual.certify.journal import Journal, progress_path
    from onnxdual.certify.shards import shard_batches
    from onnxdual.data import load_dataset
    from onnxdual.distributed import join_torchrun, shutdown_distributed
    from onnxdual.reports import write_certify_report

    eps = parse_eps_list(eps_text)
    clip = parse_clip(clip_text)
    projections = parse_projections(projections_text)
    if norm == "l2" and clip is not None and given(click.get_current_context(), "clip_text"):
        warn(f"--clip {clip_text} is ignored with --norm l2 (only l-inf balls are intersected with the data "
             "domain)")
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    dev = setup_torch(threads_text, device)
    # under torchrun: this rank's device (one process per GPU: cuda:LOCAL_RANK) and its place in the group
    dev, world = join_torchrun(dev.type)
    model_path = model if model is not None else default_model()
    stages = load_stages(model_path, allow_outside=allow_stages_outside)
    dataset = load_dataset(data, split=split, limit=limit)
    settings = CertifySettings(eps=eps, norm=norm, clip=clip if norm == "linf" else None, batch_size=batch_size,
                               pgd_steps=pgd_steps, pgd_restarts=pgd_restarts, seed=seed, probable=delta,
                               projections=projections, relaxation=relaxation, time_budget=time_budget)
    for stage in stages:
        stage.net.to(dev)
    x, y = dataset.x.to(dev), dataset.y.to(dev)
    mine = sum(min(batch_size, x.shape[0] - s) for s in shard_batches(x.shape[0], batch_size, world))
    progress = _Progress(len(eps) * mine, enabled=not quiet and world.main and sys.stderr.isatty())
    journal = Journal(progress_path(out, world.rank, world.world_size), resume)
    plans = []

    def on_plan(plan) -> None:
        plans.append(plan)
        if plan.probable is not None and plan.probable.slower and world.main:
            warn(plan.probable.describe())
        if plan.estimate is not None and plan.estimate.large and world.main and not quiet:
            click.echo(f"onnxdual: estimate: {plan.estimate.describe()}", err=True)

    try:
        with journal:
            result = certify(stages, x, y, settings, progress, journal=journal, on_plan=on_plan)
    except KeyboardInterrupt:
        progress.close()
        click.echo(f"onnxdual: interrupted: {journal.saved_examples} example-eps results are saved in "
                   f"{journal.path}; run the same command with --resume to continue", err=True)
        sys.exit(130)
    finally:
        progress.close()
    if not world.main:  # every rank holds the whole result; rank 0 alone writes and reports it
        journal.discard()
        shutdown_distributed()
        return
    shutdown_distributed()
    meta = result.run_meta(
        model=str(model_path) + ("" if model is not None else " (embedded default)"),
        dataset=f"{dataset.name} ({x.shape[0]} examples)",
        device=str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
        started=started, seconds=time.perf_counter() - t0,
        command="onnxdual " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        extra={"estimate": plans[0].estimate.to_dict()} if plans and plans[0].estimate else None).to_dict()
    summary = result.summary_frame()
    paths = write_certify_report(out, result.examples_frame(), summary, meta, result.cascade_frame(),
                                 adversarials=result.adversarials_frame())
    paths["config"] = write_resolved(out)
    journal.discard()  # the report holds every result now
    if paths.replaced and not quiet:
        click.echo(f"onnxdual: replaced the previous report in {out}", err=True)
    overall = summary[summary.stage == "all"]
    if as_json:
        click.echo(json.dumps({"meta": meta, "summary": json.loads(overall.to_json(orient="records")),
                               "files": {k: str(v) for k, v in paths.items()}}, indent=2))
    elif not quiet:
        label = "ℓ∞" if norm == "linf" else "ℓ2"
        how = "" if delta is None else f" with probability >= {1 - delta:g} each"
        click.echo(f"relaxation: {result.relaxation} ({result.relaxation_choice})")
        if result.ranks:
            click.echo(f"ranks: {meta['ranks']}")
        for row in overall.itertuples():
            click.echo(f"eps={row.eps:g} ({label}): certified{how} {row.certified_accuracy:.1%}, "
                       f"PGD {row.pgd_accuracy:.1%}, clean {row.clean_accuracy:.1%} of {row.n} examples "
                       f"({row.examples_per_second:.1f} examples/s)")
        click.echo(f"report: {paths['report_html']}")
    if result.violations:
        first = result.violations[0]
        where = f"first: example {first['index']}, eps {first['eps']}, stage {first['stage']}"
        if delta is None:
            click.echo(f"onnxdual: error: soundness violation: {len(result.violations)} certified bound(s) beaten "
                       f"by an attack ({where}); please report this bug", err=True)
        else:
            click.echo(f"onnxdual: error: {len(result.violations)} bound(s) that held with probability >= "
                       f"{1 - delta:g} were beaten by an attack ({where}); treat this run's certificates as "
                       "void", err=True)
        sys.exit(SOUNDNESS_VIOLATION)


__all__ = ["certify_command", "USER_ERROR"]
