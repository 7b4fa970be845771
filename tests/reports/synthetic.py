"""Synthetic certification results shaped like the certify command's DataFrames (for report tests)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def make_results(n: int = 500, eps: tuple[float, ...] = (0.05, 0.1, 0.2), stages: int = 2,
                 seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """``(examples, summary, cascade)`` for ``n`` examples at each eps; ``cascade`` is None for 1 stage.

    Plausible and self-consistent: certified examples are correctly classified and not broken by PGD,
    certified accuracy <= PGD accuracy <= clean accuracy, cascade counts add up.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    correct = rng.random(n) < 0.984
    predictions = np.where(correct, labels, (labels + rng.integers(1, 10, n)) % 10)
    rows, summary, cascade = [], [], []
    for k, e in enumerate(eps):
        mu = 3.0 - 22.0 * e
        margin = rng.normal(mu, 2.0, n)
        margin = np.where(correct, margin, -np.abs(margin) - 1.0)
        stage = np.where(margin > 0, 1, 0)
        if stages > 1:
            rescued = correct & (margin <= 0) & (rng.random(n) < 0.35)
            margin = np.where(rescued, rng.uniform(0.01, 0.8, n), margin)
            stage = np.where(rescued, 2, stage)
        certified = stage > 0
        attack_p = 1.0 / (1.0 + np.exp(2.0 * margin + 1.5))
        pgd_success = ~correct | (~certified & (rng.random(n) < attack_p))
        pgd_margin = np.where(pgd_success, -rng.uniform(0.01, 2.0, n),
                              np.maximum(margin + rng.uniform(0.2, 3.0, n), rng.uniform(0.05, 1.0, n)))
        rows.append(pd.DataFrame({
            "index": np.arange(n), "eps": e, "label": labels, "prediction": predictions,
            "certified": certified, "margin_lower_bound": margin,
            "stage": pd.array(np.where(certified, stage, 0), dtype="Int64").astype("Int64"),
            "pgd_success": pgd_success, "pgd_margin": pgd_margin,
        }))
        rows[-1].loc[~certified, "stage"] = pd.NA
        seconds = 4.0 + 3.0 * k
        summary.append({"eps": e, "stage": "all", "n": n, "clean_accuracy": correct.mean(),
                        "certified_accuracy": certified.mean(), "pgd_accuracy": (~pgd_success).mean(),
                        "examples_per_second": n / seconds, "seconds": seconds})
        cumulative = 0
        for s in range(1, stages + 1 if stages > 1 else 1):
            by_stage = int((stage == s).sum())
            cumulative += by_stage
            alone = (stage == s).mean() if s == 1 else ((stage == s).mean() + 0.5 * (stage == 1).mean())
            summary.append({"eps": e, "stage": s, "n": n, "clean_accuracy": correct.mean() - 0.01 * (s - 1),
                            "certified_accuracy": alone, "pgd_accuracy": (~pgd_success).mean() - 0.01 * (s - 1),
                            "examples_per_second": n / (seconds / stages), "seconds": seconds / stages})
            cascade.append({"eps": e, "stage": s, "model": f"mnist_stage{s}.onnx", "certified_by_stage": by_stage,
                            "cumulative_certified": cumulative, "cumulative_certified_accuracy": cumulative / n,
                            "standard_accuracy_stage_alone": correct.mean() - 0.01 * (s - 1),
                            "robust_accuracy_stage_alone": alone})
    examples = pd.concat(rows, ignore_index=True)
    return examples, pd.DataFrame(summary), (pd.DataFrame(cascade) if stages > 1 else None)


def make_meta(probabilistic: bool = False, **extra) -> dict:
    """A ``meta`` dict like the certify command writes."""
    meta = {
        "command": "onnxdual certify models/mnist_stage1.onnx models/mnist_stage2.onnx --eps 0.05 0.1 0.2 "
                   "--norm linf --n 500 --out reports/mnist",
        "model": "mnist_stage1.onnx + mnist_stage2.onnx",
        "norm": "linf",
        "versions": {"onnxdual": "0.1.0", "torch": "2.3.1", "onnx": "1.16.0", "numpy": "1.26.4"},
        "device": "cpu",
        "started": "2024-05-01T12:00:00+00:00",
        "seconds": 33.5,
        "bound": "probabilistic (delta=0.01)" if probabilistic else "exact",
        "dataset": "MNIST test (first 500)",
    }
    meta.update(extra)
    return meta
