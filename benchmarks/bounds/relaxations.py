"""The three relaxations side by side with auto_LiRPA: time per example and tightness, in one run.

Part 1, the reference models (``<shared>/reference/models``): for mnist_fc_256x2 and mnist_small at eps 0.01
and 0.1 (plain l_inf ball, 16 inputs in one batch, C = e_y - e_j for j != y), each relaxation's seconds per
example and mean worst-margin lower bound, next to auto_LiRPA's CROWN and alpha-CROWN (20 iterations) timed
by ``peer_autolirpa.py`` in its own venv right after (``ONNXDUAL_PEER_PYTHON`` or ``--peer-python``; without
one, the stored reference bounds are used and no peer time is shown). Ratios: our adaptive time over CROWN's,
alpha-CROWN's time over our optimized time (the issue's targets: <= 1 and >= 3).

Part 2, the shipped default model: certified accuracy per relaxation at eps 0.1 and 0.15 on the first
``--certify-n`` MNIST test images (clip [0, 1], as ``onnxdual certify`` does).

Pinned and single-threaded (``taskset -c 0``; one torch thread); the load average is printed with the tables.
Usage::

    ONNXDUAL_PEER_PYTHON=/work/peers/autolirpa-venv/bin/python taskset -c 0 \\
        python benchmarks/bounds/relaxations.py --shared ../shared --out benchmarks/bounds/results
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import onnxdual
from onnxdual.certify.margins import worst_margins

MODES = ("paper", "adaptive", "optimized")
HERE = Path(__file__).resolve().parent


def reference_rows(shared: Path, models, eps_list, n: int, modes=MODES, repeats: int = 1) -> list[dict]:
    rows = []
    x_all = torch.load(shared / "reference" / "models" / "inputs_1x28x28.pt")[:n]
    for model in models:
        net = onnxdual.load(shared / "reference" / "models" / f"{model}.onnx")
        with torch.no_grad():
            y = net(x_all).argmax(1)
        eye = torch.eye(10)
        c = torch.stack([torch.stack([eye[y[b]] - eye[j] for j in range(10) if j != y[b]]) for b in range(n)])
        for eps in eps_list:
            for mode in modes:
                onnxdual.DualNetwork(net, x_all[:2], eps, relaxation=mode).lower_bound(c[:2])  # warm-up
                times = []
                for _ in range(repeats):  # the median of fresh DualNetworks (each call builds its own)
                    t0 = time.perf_counter()
                    lb = onnxdual.DualNetwork(net, x_all, eps, relaxation=mode).lower_bound(c).detach()
                    times.append(time.perf_counter() - t0)
                seconds = statistics.median(times) / n
                rows.append({"model": model, "eps": eps, "method": mode, "s_per_example": seconds,
                             "mean_worst_margin": float(lb.min(1).values.mean()), "lb": lb})
    return rows


def peer_rows(args, models, eps_list) -> list[dict]:
    python = args.peer_python or os.environ.get("ONNXDUAL_PEER_PYTHON")
    if python:
        out = args.out / ("peer_autolirpa.json" if args.name == "relaxations" else f"{args.name}_peer.json")
        cmd = [python, str(HERE / "peer_autolirpa.py"), "--models", ",".join(models), "--eps",
               ",".join(str(e) for e in eps_list), "--n", str(args.n), "--methods", args.peer_methods,
               "--alpha-iterations", "20", "--repeats", str(args.repeats), "--shared", str(args.shared),
               "--json", str(out)]
        subprocess.run(cmd, check=True)
        data = json.loads(out.read_text())
        return [{"model": r["model"], "eps": r["eps"], "method": "auto_LiRPA " + r["method"],
                 "s_per_example": r["seconds_per_example"], "mean_worst_margin": r["mean_min_lb"],
                 "lb": torch.tensor(r["lb"])} for r in data["results"]]
    rows = []  # no peer venv: the stored bounds (tightness only)
    for model in models:
        for eps in eps_list:
            for method, name in (("CROWN", "CROWN"), ("alphaCROWN", "alpha-CROWN")):
                path = args.shared / "reference" / "auto_lirpa" / f"bounds_{model}_eps{eps}_{method}.pt"
                if path.exists():
                    lb = torch.load(path)["lb"][: args.n]
                    rows.append({"model": model, "eps": eps, "method": f"auto_LiRPA {name} (stored)",
                                 "s_per_example": float("nan"), "mean_worst_margin": float(lb.min(1).values.mean()),
                                 "lb": lb})
    return rows


def certify_rows(n: int, eps_list=(0.1, 0.15)) -> list[dict]:
    from onnxdual.data import load_dataset
    from onnxdual_cli.certify import default_model

    net = onnxdual.load(default_model())
    data = load_dataset(None, split="test", limit=n)
    rows = []
    for mode in MODES:
        for eps in eps_list:
            t0 = time.perf_counter()
            certified = 0
            for start in range(0, n, 50):
                xb, yb = data.x[start:start + 50], data.y[start:start + 50]
                pred, margin = worst_margins(net, xb, eps, clip=(0.0, 1.0), relaxation=mode)
                certified += int(((margin > 0) & (pred == yb)).sum())
            rows.append({"eps": eps, "relaxation": mode, "n": n, "certified_accuracy": certified / n,
                         "s_per_example": (time.perf_counter() - t0) / n})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--certify-n", type=int, default=100)
    parser.add_argument("--peer-python", default=None)
    parser.add_argument("--skip-certify", action="store_true")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed calls per setting after the warm-up, ours and the peer's (median kept)")
    parser.add_argument("--modes", default=",".join(MODES), help="our relaxations to time (comma-separated)")
    parser.add_argument("--models", default="mnist_fc_256x2,mnist_small")
    parser.add_argument("--name", default="relaxations", help="the table is written to OUT/NAME.md")
    parser.add_argument("--peer-methods", default="CROWN-sameslope,CROWN,alpha-CROWN",
                        help="auto_LiRPA methods to time in the same run (peer_autolirpa.py)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    models, eps_list = args.models.split(","), [0.01, 0.1]
    load_before = os.getloadavg()[0]
    ours = reference_rows(args.shared, models, eps_list, args.n, args.modes.split(","), args.repeats)
    peers = peer_rows(args, models, eps_list)
    lines = [f"# Relaxations vs auto_LiRPA (n={args.n}, one thread, median of {args.repeats} timed call(s), "
             f"load average {load_before:.2f} before, "
             f"{os.getloadavg()[0]:.2f} after)", "",
             "| model | eps | method | s/example | mean worst margin | entries >= alpha-CROWN - 1e-3 | ratio |",
             "|---|---|---|---|---|---|---|"]
    for model in models:
        for eps in eps_list:
            mine = {r["method"]: r for r in ours if r["model"] == model and r["eps"] == eps}
            theirs = {r["method"]: r for r in peers if r["model"] == model and r["eps"] == eps}
            alpha = next((r for k, r in theirs.items() if "alpha" in k), None)
            crown = next((r for k, r in theirs.items() if k.endswith(" CROWN")), None)
            same = next((r for k, r in theirs.items() if "sameslope" in k), None)
            for name, r in [*mine.items(), *theirs.items()]:
                within = (f"{int((r['lb'] >= alpha['lb'] - 1e-3).sum())}/{r['lb'].numel()}"
                          if alpha is not None and r["lb"].shape == alpha["lb"].shape else "")
                ratio = ""
                if name == "paper" and same is not None and same["s_per_example"] == same["s_per_example"]:
                    ratio = f"{r['s_per_example'] / same['s_per_example']:.2f}x same-slope CROWN's time"
                if name == "adaptive" and crown is not None and crown["s_per_example"] == crown["s_per_example"]:
                    ratio = f"{r['s_per_example'] / crown['s_per_example']:.2f}x CROWN's time"
                if name == "optimized" and alpha is not None and alpha["s_per_example"] == alpha["s_per_example"]:
                    ratio = f"alpha-CROWN takes {alpha['s_per_example'] / r['s_per_example']:.2f}x as long"
                lines.append(f"| {model} | {eps} | {name} | {r['s_per_example']:.4f} | "
                             f"{r['mean_worst_margin']:.5f} | {within} | {ratio} |")
    if not args.skip_certify:
        lines += ["", f"## Shipped default model: certified accuracy per relaxation (first {args.certify_n} "
                  "MNIST test images, clip [0, 1])", "", "| eps | relaxation | certified | s/example |",
                  "|---|---|---|---|"]
        for r in certify_rows(args.certify_n):
            lines.append(f"| {r['eps']} | {r['relaxation']} | {r['certified_accuracy']:.1%} | "
                         f"{r['s_per_example']:.3f} |")
    text = "\n".join(lines) + "\n"
    (args.out / f"{args.name}.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
