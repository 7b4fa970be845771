"""The one cost model of the AutoDual pass: when the exact pass turns from forward columns to backward rows,
how many examples one pass takes, how many backward rows fit a memory budget (and, with a deadline, how many
rows a chunk takes).

Forward (Alg. 3, App. F) the pass carries, for every value, the images of each source's columns: the input
identity (shared by the batch until the first activation) and one identity per activation's relaxation gap
(shared columns, per-example weights). Backward (Theorem 1 with ``c = +/- e_j``) it runs the dual network
once per unit of an activation. Both give the same bound; this module decides which is cheaper and sizes
memory with the same rule the pass uses, so the budget is never under-counted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator

from torch import Tensor

from onnxdual.duals.base import ActivationDual
from onnxdual.engine.build import BuiltDual
from onnxdual.errors import DeadlineExceeded

#: backward when ``units * SWITCH_FACTOR`` < per-example forward columns (tuned on the reference models)
SWITCH_FACTOR = 2.0
#: live copies of the largest term while it is pushed through a layer: the term, its image, |.| and slack
TERM_COPIES = 4


def column_cost(terms: Iterable[tuple[int, int]], batch: int) -> float:
    """Per-example forward columns of a value whose source terms have shapes ``(Bt, K, ...)``, given as
    ``(Bt, K)`` pairs: columns shared by the batch (``Bt = 1``) cost ``1/batch`` of per-example ones."""
    return sum(k * (1 if bt > 1 else 1 / batch) for bt, k in terms)


def turns_backward(units: int, columns: float) -> bool:
    """Whether bounding ``units`` units backwards is cheaper than carrying ``columns`` per-example forward
    columns on to them."""
    return SWITCH_FACTOR * units < columns


#: the most bytes one chunk of backward rows holds, whatever the budget allows: past some tens of MB a
#: larger chunk is slower per row (fresh tensors of that size cost more in page faults and cache misses
#: than the per-chunk overhead they save; adaptive, 16 examples: mnist_small 0.046-0.058 -> 0.035 s/example,
#: mnist_fc_256x2 0.0059 -> 0.0051)
ROWS_WORKING_SET = 64 * 1024**2


def backward_rows(batch: int, largest_value: int, element_size: int, memory_budget: int) -> int:
    """How many backward rows (units bounded at once) fit ``memory_budget`` -- and the working set
    :data:`ROWS_WORKING_SET` -- for ``batch`` examples whose largest network value has ``largest_value``
    elements."""
    return max(1, min(memory_budget, ROWS_WORKING_SET) // (TERM_COPIES * batch * largest_value * element_size))


def units_ahead(built: BuiltDual) -> list[int]:
    """For every step up to the last activation, the units of the next activation at or after it: the switch
    is decided before the layers that lead to an activation, so no forward work is spent on columns the
    backward pass then replaces."""
    last = built.last_activation
    ahead, upcoming = [0] * (last + 1), 0
    for i in range(last, -1, -1):
        if isinstance(built.steps[i].layer, ActivationDual):
            upcoming = math.prod(built.steps[i].input_shapes[0])
        ahead[i] = upcoming
    return ahead


def forward_elements(built: BuiltDual, input_columns: tuple[int, int], batch: int) -> int:
    """An upper bound of the elements of the largest forward state of the exact pass for ``batch`` examples,
    walking the steps on shapes alone with the pass's own switch rule.

    How many columns the pass really carries depends on the data (coordinates a box fixes need no column,
    stable units leave no gap), and fewer columns make the pass stay forward *longer*. So the walk decides
    the switch with the fewest columns the pass can have (``input_columns[0]`` for the input, none for the
    gaps) and counts memory with the most (``input_columns[1]``, every unit of an activation): the pass can
    turn no later than the walk does, and no state it builds is larger than the walk counts."""
    k_lo, k_hi = input_columns
    # value -> {source id: (Bt, fewest columns, most columns)}
    terms: dict[str, dict[int, tuple[int, int, int]]] = {built.graph.input_name: {0: (1, k_lo, k_hi)}}
    largest = k_hi * math.prod(built.input_shape)
    next_units = units_ahead(built)
    sources = 1
    for i, step in enumerate(built.steps[: built.last_activation + 1]):
        inputs = [terms[name] for name in step.variable_inputs]
        if any(turns_backward(next_units[i], column_cost(((bt, lo) for bt, lo, _ in t.values()), batch))
               for t in inputs):
            break
        units = math.prod(step.output_shape)
        if isinstance(step.layer, ActivationDual):
            out = {sid: (batch, lo, hi) for sid, (_, lo, hi) in inputs[0].items()}  # per-example slopes
            out[sources] = (1, 0, units)
            sources += 1
        else:
            out = {}
            for t in inputs:
                for sid, (bt, lo, hi) in t.items():
                    out[sid] = (max(bt, out.get(sid, (1,))[0]), lo, hi)
        terms[step.node.name] = out
        largest = max(largest, units * sum(bt * hi for bt, _, hi in out.values()))
    return largest


def examples_per_pass(built: BuiltDual, input_columns: tuple[int, int], n_examples: int, element_size: int,
                      memory_budget: int) -> int:
    """The most examples (at most ``n_examples``) whose exact forward phase fits ``memory_budget`` bytes;
    ``input_columns``: the fewest and the most input columns a pass over some of the examples can have."""
    batch = max(1, n_examples)
    while batch > 1:
        need = forward_bytes(built, input_columns, batch, element_size)
        if need <= memory_budget:
            break
        batch = max(1, min(batch - 1, int(batch * memory_budget / need)))
    return batch


def forward_bytes(built: BuiltDual, input_columns: tuple[int, int], batch: int, element_size: int) -> int:
    """Bytes of the largest forward state of the exact pass for ``batch`` examples (what chunks are sized
    by)."""
    return TERM_COPIES * forward_elements(built, input_columns, batch) * element_size


def pass_bytes(built: BuiltDual, input_columns: tuple[int, int], n_examples: int, element_size: int,
               memory_budget: int) -> tuple[int, int]:
    """The examples of one exact pass over ``n_examples`` (:func:`examples_per_pass`) and the most bytes it
    holds at once: its forward phase's largest state, or its backward rows' (as many as fit
    ``memory_budget``, at least one, at most an activation's units). Estimates a run before it starts."""
    batch = examples_per_pass(built, input_columns, n_examples, element_size, memory_budget)
    units = max([math.prod(s.input_shapes[0]) for s in built.steps if isinstance(s.layer, ActivationDual)],
                default=0)
    rows = min(units, backward_rows(batch, built.largest_value, element_size, memory_budget))
    backward = TERM_COPIES * rows * batch * built.largest_value * element_size
    return batch, max(forward_bytes(built, input_columns, batch, element_size), backward)


#: with a deadline, a chunk of backward rows is sized to take about this long (measured on the chunks before
#: it; the first is small), so that a pass never overruns its deadline by more than one short chunk
CHUNK_SECONDS = 0.2
FIRST_CHUNK = 16


def check_stop(stop: Callable[[], bool] | None) -> None:
    """Raise :class:`~onnxdual.errors.DeadlineExceeded` if ``stop`` (a deadline) says so."""
    if stop is not None and stop():
        raise DeadlineExceeded("the time limit was reached during a bound computation")


def row_chunks(rows: Tensor, step: int, stop: Callable[[], bool] | None) -> Iterator[Tensor]:
    """``rows`` in chunks of at most ``step``. With ``stop``: asked before every chunk (:func:`check_stop`),
    and the chunks sized by the measured time per row (the caller's work between two chunks) to take about
    :data:`CHUNK_SECONDS` -- small chunks cost no more per row, as every row is pushed on its own anyway."""
    if stop is None:
        yield from (rows[start: start + step] for start in range(0, rows.numel(), step))
        return
    start, size = 0, min(step, FIRST_CHUNK)
    while start < rows.numel():
        check_stop(stop)
        began = time.perf_counter()
        yield rows[start: start + size]
        start += size
        per_row = (time.perf_counter() - began) / size
        size = max(1, min(step, int(CHUNK_SECONDS / max(per_row, 1e-9))))
