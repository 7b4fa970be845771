"""Peer runner: times auto_LiRPA's CROWN and alpha-CROWN on the reference models, for the bounds benchmark.

This script is a separate process on purpose: it runs with the python of a scratch venv that holds auto_LiRPA
(which pins an older torch in its setup.py) and it never imports onnxdual, so onnxdual's own venv stays clean.
benchmarks/bounds/relaxations.py calls it through subprocess with the interpreter named by ONNXDUAL_PEER_PYTHON.

Creating the peer venv (the exact commands used; auto_LiRPA 0.7.1, commit a050a3d, torch 2.13 CPU):

    mkdir -p /work/peers && cd /work/peers
    python3 -m venv autolirpa-venv
    autolirpa-venv/bin/pip install torch==2.13.0
    autolirpa-venv/bin/pip install numpy packaging appdirs pyyaml tqdm graphviz onnx
    git clone https://github.com/Verified-Intelligence/auto_LiRPA /work/peers/auto_LiRPA   # at commit a050a3d
    # (here: git -C <bare mirror of that repo> worktree add /work/peers/auto_LiRPA HEAD)

auto_LiRPA is not pip-installed (its setup.py wants torch < 2.9); it is imported from its checkout, which is
PYTHONPATH if set, else --autolirpa-src (default /work/peers/auto_LiRPA). Run:

    taskset -c 1 /work/peers/autolirpa-venv/bin/python benchmarks/bounds/peer_autolirpa.py \
        --models mnist_fc_256x2,mnist_small --eps 0.01,0.1 --n 16 --methods CROWN,alpha-CROWN \
        --alpha-iterations 20 --shared /work/shared --json /tmp/peer.json

What is computed: for the first n inputs x of reference/models/inputs_1x28x28.pt, lower bounds of C f(x') over the
plain l_inf ball x' in [x - eps, x + eps] (not clipped to [0, 1]), C (n, 9, 10) with rows e_y - e_j for j != y
(j ascending), y the model's prediction at x. The torch model is rebuilt by hand from the ONNX initializers
(Conv / Gemm / Relu / Flatten only; anything else is refused), so no ONNX converter is involved. Each (model, eps,
method) gets a fresh BoundedModule; CROWN is timed after one warm-up call, alpha-CROWN ('CROWN-Optimized' with
auto_LiRPA's default optimiser settings except the iteration count) after a warm-up call on two examples, each timed
call with a fresh module. When a stored reference
(reference/auto_lirpa/bounds_<model>_eps<eps>_<CROWN|alphaCROWN[100]>.pt) exists for the setting, the max abs
difference to its 'lb' is printed and stored; they were made the same way (see that folder's README.md).
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import numpy_helper

METHODS = {"CROWN": "CROWN", "CROWN-sameslope": "CROWN", "alpha-CROWN": "CROWN-Optimized"}
#: per method, the bound options it is built with ("same-slope": the lower ReLU slope equals the upper one,
#: the relaxation of the paper's dual network)
BOUND_OPTS = {"CROWN-sameslope": {"activation_bound_option": "same-slope"}}


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def torch_from_onnx(path):
    """nn.Sequential equal to a chain ONNX graph of Conv / Gemm / Relu / Flatten (the reference models)."""
    graph = onnx.load(path).graph
    inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    layers = []
    for node in graph.node:
        a = _attrs(node)
        if node.op_type == "Relu":
            layers.append(nn.ReLU())
        elif node.op_type == "Flatten":
            if a.get("axis", 1) != 1:
                raise ValueError(f"Flatten axis {a['axis']} not supported")
            layers.append(nn.Flatten())
        elif node.op_type == "Conv":
            w = inits[node.input[1]]
            pads = list(a.get("pads", [0] * 4))
            if pads[:2] != pads[2:] or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                raise ValueError(f"asymmetric / auto padding {pads} not supported")
            conv = nn.Conv2d(w.shape[1] * a.get("group", 1), w.shape[0], tuple(w.shape[2:]),
                             stride=tuple(a.get("strides", [1, 1])), padding=tuple(pads[:2]),
                             dilation=tuple(a.get("dilations", [1, 1])), groups=a.get("group", 1),
                             bias=len(node.input) > 2)
            conv.weight.data = w
            if len(node.input) > 2:
                conv.bias.data = inits[node.input[2]]
            layers.append(conv)
        elif node.op_type == "Gemm":
            if a.get("transA", 0):
                raise ValueError("Gemm transA not supported")
            w = inits[node.input[1]]
            w = w if a.get("transB", 0) else w.t()
            lin = nn.Linear(w.shape[1], w.shape[0], bias=len(node.input) > 2)
            lin.weight.data = a.get("alpha", 1.0) * w.contiguous()
            if len(node.input) > 2:
                lin.bias.data = a.get("beta", 1.0) * inits[node.input[2]]
            layers.append(lin)
        else:
            raise ValueError(f"op {node.op_type} not supported by this peer runner")
    return nn.Sequential(*layers).eval()


def margin_spec(logits):
    """C (n, 9, 10): rows e_y - e_j for j != y, j ascending; y = argmax of the logits."""
    y = logits.argmax(1)
    n, k = logits.shape
    eye = torch.eye(k)
    c = torch.stack([torch.stack([eye[y[i]] - eye[j] for j in range(k) if j != y[i]]) for i in range(n)])
    return c, y


def reference_file(shared, model, eps, method, iterations):
    tag = {"CROWN": "CROWN"}.get(method)
    if method == "alpha-CROWN":
        tag = {20: "alphaCROWN", 100: "alphaCROWN100"}.get(iterations)
    if tag is None:
        return None
    path = os.path.join(shared, "reference", "auto_lirpa", f"bounds_{model}_eps{eps:g}_{tag}.pt")
    return path if os.path.exists(path) else None


def run_one(net, x, c, eps, method, iterations, repeats):
    from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm

    def module():
        bounded = BoundedModule(net, torch.empty_like(x), device="cpu", verbose=0,
                                bound_opts=BOUND_OPTS.get(method))
        bounded.set_bound_opts({"optimize_bound_args": {"iteration": iterations}})
        return bounded

    def call(bounded, x, c):
        bx = BoundedTensor(x, PerturbationLpNorm(norm=np.inf, x_L=x - eps, x_U=x + eps))
        t0 = time.perf_counter()
        lb, _ = bounded.compute_bounds(x=(bx,), C=c, method=METHODS[method], bound_upper=False)
        return lb.detach(), time.perf_counter() - t0

    if method != "alpha-CROWN":
        bounded = module()
        call(bounded, x, c)  # warm-up: graph tracing caches and first-touch allocations are not the method's cost
        runs = [call(bounded, x, c) for _ in range(repeats)]
    else:
        # warm-up on two examples (as onnxdual's side does): the optimiser's one-time imports are not the
        # method's cost; every timed call gets a fresh module, so no call starts from optimised slopes
        call(module(), x[:2], c[:2])
        runs = [call(module(), x, c) for _ in range(repeats)]
    return runs[-1][0], [t for _, t in runs]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mnist_fc_256x2,mnist_small")
    p.add_argument("--eps", default="0.01,0.1")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--methods", default="CROWN,alpha-CROWN")
    p.add_argument("--alpha-iterations", type=int, default=20)
    p.add_argument("--repeats", type=int, default=1, help="timed calls after the warm-up (median kept)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--shared", default="/work/shared")
    p.add_argument("--autolirpa-src", default="/work/peers/auto_LiRPA")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)

    if not os.environ.get("PYTHONPATH"):
        sys.path.insert(0, args.autolirpa_src)
    import auto_LiRPA

    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    for m in methods:
        if m not in METHODS:
            p.error(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    models_dir = os.path.join(args.shared, "reference", "models")
    inputs = torch.load(os.path.join(models_dir, "inputs_1x28x28.pt"))[: args.n].float()

    results = []
    for model in args.models.split(","):
        net = torch_from_onnx(os.path.join(models_dir, f"{model}.onnx"))
        with torch.no_grad():
            c, y = margin_spec(net(inputs))
        for eps in (float(e) for e in args.eps.split(",")):
            for method in methods:
                lb, times = run_one(net, inputs, c, eps, method, args.alpha_iterations, args.repeats)
                rec = {
                    "model": model, "eps": eps, "method": method, "n": args.n,
                    "iterations": args.alpha_iterations if method == "alpha-CROWN" else None,
                    "seconds_per_example": statistics.median(times) / args.n,
                    "seconds_per_call": times,
                    "mean_min_lb": lb.min(1).values.mean().item(),
                    "verified": int((lb.min(1).values > 0).sum()),
                    "lb": lb.tolist(), "y": y.tolist(),
                    "reference": None, "max_abs_diff_vs_reference": None,
                }
                ref = reference_file(args.shared, model, eps, method, args.alpha_iterations)
                if ref is not None:
                    stored = torch.load(ref)
                    k = min(args.n, stored["lb"].shape[0])
                    if not torch.equal(stored["y"][:k], y[:k]):
                        raise SystemExit(f"{model}: predictions differ from {ref}; the model rebuild is wrong")
                    rec["reference"] = os.path.basename(ref)
                    rec["max_abs_diff_vs_reference"] = (lb[:k] - stored["lb"][:k]).abs().max().item()
                results.append(rec)
                diff = rec["max_abs_diff_vs_reference"]
                print(f"{model:16s} eps={eps:<5g} {method:12s} s/example={rec['seconds_per_example']:.4f} "
                      f"mean min lb={rec['mean_min_lb']:+.4f} verified={rec['verified']}/{args.n} "
                      f"max|lb-ref|={'n/a' if diff is None else f'{diff:.2e}'}", flush=True)

    out = {
        "peer": "auto_LiRPA", "version": auto_LiRPA.__version__, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
        "perturbation": "linf ball x+-eps, not clipped", "results": results,
    }
    tmp = f"{args.json}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, args.json)  # never a half-written file where the caller looks


if __name__ == "__main__":
    main()
