"""Certification on several processes: the shards of batches cover every batch once and in order, a batch's
random streams depend only on (seed, stream, eps, first index), and ``torchrun --nproc_per_node 2 onnxdual
certify`` (gloo, CPU) writes the same examples.csv, byte for byte, as one process, and the same summary apart
from the timings; its report says how many ranks ran it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from onnxdual.certify.shards import PGD_STREAM, PROJECTION_STREAM, batch_generator, shard_batches
from onnxdual.distributed import DistInfo

REPO = Path(__file__).resolve().parents[2]
#: few examples, small batches (3 batches over 2 ranks: 1 + 2), two eps, a short attack
ARGS = ("certify", "--limit", "10", "--batch-size", "4", "--eps", "0.05,0.1", "--pgd-steps", "5",
        "--pgd-restarts", "2", "--relaxation", "adaptive", "--device", "cpu", "--quiet")
TIMINGS = ["examples_per_second", "seconds"]


@pytest.mark.parametrize("n,batch,world",
                         [(10, 4, 2), (10, 4, 3), (3, 4, 2), (0, 4, 2), (100, 7, 5), (9, 3, 9)])
def test_the_shards_are_the_one_process_batches_once_each_in_rank_order(n, batch, world):
    shards = [list(shard_batches(n, batch, DistInfo(r, world))) for r in range(world)]
    assert [s for shard in shards for s in shard] == list(range(0, n, batch))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_a_batch_draws_the_same_numbers_wherever_it_runs_and_others_draw_other_ones():
    def draw(*key):
        return torch.rand(5, generator=batch_generator(*key))

    assert torch.equal(draw(0, PGD_STREAM, 1, 8), draw(0, PGD_STREAM, 1, 8))
    keys = [(0, PGD_STREAM, 1, 8), (1, PGD_STREAM, 1, 8), (0, PROJECTION_STREAM, 1, 8), (0, PGD_STREAM, 0, 8),
            (0, PGD_STREAM, 1, 4)]
    values = [draw(*k) for k in keys]
    assert all(not torch.equal(a, b) for i, a in enumerate(values) for b in values[i + 1:])


def run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_two_ranks_write_what_one_process_writes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    one, two = tmp_path / "one", tmp_path / "two"
    run([sys.executable, "-m", "onnxdual_cli.main", *ARGS, "--out", str(one)], env)
    # --standalone: a rendezvous on a free port of this machine, as a user runs it on one machine
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "onnxdual_cli.main", *ARGS, "--out", str(two)], env)
    assert (two / "examples.csv").read_bytes() == (one / "examples.csv").read_bytes()
    alone, ranks = (pd.read_csv(p / "summary.csv").drop(columns=TIMINGS) for p in (one, two))
    pd.testing.assert_frame_equal(ranks, alone)
    ranks_line = json.loads((two / "summary.json").read_text())["meta"]["ranks"]
    assert ranks_line.startswith("2 ranks (gloo) on cpu") and "rank 1 6 examples" in ranks_line, ranks_line
    assert "ranks" not in json.loads((one / "summary.json").read_text())["meta"]
    assert "2 ranks (gloo)" in (two / "report.html").read_text()


def test_the_gather_puts_a_cascade_and_its_thumbnails_in_the_one_process_order(monkeypatch):
    """Two ranks' parts, made in one process (the collectives replaced by what they would return), merge
    into the one-process result: records, per-stage records (two stages), bound times, thumbnails."""
    from onnxdual.certify import CertifySettings, certify, load_stages, shards
    from onnxdual.data import load_dataset
    from onnxdual_cli.certify import default_model

    data = load_dataset(None, limit=10)
    stages = load_stages(default_model()) * 2  # a two-stage cascade
    settings = CertifySettings(eps=(0.05, 0.3), batch_size=4, pgd_steps=3, relaxation="paper")
    alone = certify(stages, data.x, data.y, settings)
    parts = {}
    # rank 0's decision, as the broadcast would deliver it to rank 1
    decided = ("paper", "chosen (--relaxation)")
    monkeypatch.setattr(shards, "broadcast_object", lambda obj, world: obj or decided)
    for rank in (1, 0):  # rank 1's part first, then rank 0 gathers both
        def gather(obj, world, rank=rank):
            parts[rank] = obj
            return [parts.get(r, obj) for r in range(world.world_size)]

        monkeypatch.setattr(shards, "gather_objects", gather)
        merged = certify(stages, data.x, data.y, settings, world=DistInfo(rank, 2))
    assert merged.records == alone.records and merged.stage_records == alone.stage_records
    assert [r["examples"] for r in merged.ranks] == [4, 6] and set(merged.seconds) == set(alone.seconds)
    assert alone.adversarials, "the case must keep thumbnails (undecided examples at eps 0.3)"
    key = [(a["index"], a["eps"], a["outcome"]) for a in alone.adversarials]
    assert [(a["index"], a["eps"], a["outcome"]) for a in merged.adversarials] == key
    assert all((a["adversarial"] == b["adversarial"]).all() for a, b in zip(merged.adversarials,
                                                                            alone.adversarials))
