"""The one set of defaults shared by the Python API and every command line (``onnxdual certify``, ``train``,
``verify``, ``bench``): each setting's default is defined here once, and ``CertifySettings``, ``TrainConfig``,
``onnxdual.certify()`` and the click options all read it, so the same call means the same run everywhere
(tests/cli/test_defaults.py checks that they agree).

Where a default is the paper's, the constant says so (Wong, Schmidt, Metzen & Kolter 2018, App. G)."""

from __future__ import annotations

#: perturbation norm: ``"linf"`` (the paper's main setting) or ``"l2"`` (App. H)
NORM = "linf"
#: data domain intersected with l-inf balls: pixels in [0, 1], as the paper's MNIST/CIFAR data (an input
#: outside it is refused, never silently certified against an empty set); ``None`` disables it. l2 balls
#: ignore it (the engine intersects only l-inf balls with a box).
CLIP: tuple[float, float] | None = (0.0, 1.0)
#: the perturbation radius certified and trained for (MNIST's large radius, §4.1)
EPS = 0.1
#: random seed of attacks, projections, initialisation and data order
SEED = 0

# --- certification (onnxdual certify, onnxdual.certify()) ---------------------------------------------
#: examples bounded at once
CERTIFY_BATCH_SIZE = 100
#: PGD steps and restarts of the attack that looks for counterexamples next to every certificate
PGD_STEPS = 40
PGD_RESTARTS = 1
#: ``--probable``: (k, m) = columns per geometric estimate and estimates per median (App. E)
PROJECTIONS: tuple[int, int] = (200, 10)
#: relaxation of exact bounds: ``auto`` picks the tightest whose measured cost fits TIME_BUDGET
RELAXATION = "auto"
#: seconds per example the automatic relaxation may spend (measured on the first examples): a quarter of a
#: second keeps the README's 500-example job under a minute or two on a laptop core; with patches the
#: optimised relaxation of the default model came in just under 1 s and made that job 5+ minutes
TIME_BUDGET = 0.25

# --- training (onnxdual train, TrainConfig) --------------------------------------------------------------
#: random projections r of the training bound (Alg. 1; the paper's 50, §4); ``None``: exact bound
TRAIN_PROJECTIONS: int | None = 50
#: epochs, batch size, eps ramp length (App. G.1, MNIST)
EPOCHS = 60
TRAIN_BATCH_SIZE = 50
RAMP_EPOCHS = 20
OPTIMIZER = "adam"

# --- verification (onnxdual verify, bench) -----------------------------------------------------------------
#: split input boxes when at most this many inputs are perturbed (otherwise split ReLUs)
SPLIT_MAX_INPUTS = 16
#: verify and bench bound with optimised slopes (the tightest; a proof is worth the time there)
VERIFY_RELAXATION = "optimized"

# --- every command -------------------------------------------------------------------------------------
#: ``--threads``: ``"auto"`` = torch's own choice (all cores) for batched work (certify, train); for one
#: property (verify) 1 thread up to SMALL_NETWORK parameters (more threads only add overhead there), all
#: cores above; bench: 1 thread (timings comparable between runs and with baselines)
THREADS = "auto"
#: parameters up to which one property is bounded on one thread under ``--threads auto``
SMALL_NETWORK = 200_000

__all__ = ["NORM", "CLIP", "EPS", "SEED", "CERTIFY_BATCH_SIZE", "PGD_STEPS", "PGD_RESTARTS", "PROJECTIONS",
           "RELAXATION", "TIME_BUDGET", "TRAIN_PROJECTIONS", "EPOCHS", "TRAIN_BATCH_SIZE", "RAMP_EPOCHS",
           "OPTIMIZER", "SPLIT_MAX_INPUTS", "VERIFY_RELAXATION", "THREADS", "SMALL_NETWORK"]
