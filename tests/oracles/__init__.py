"""Independent oracles for the soundness tests: random ONNX networks with an exact numpy description of
each (``networks``), an exact MILP minimum over a box (``milp``) and attacks/sampling (``attacks``).

Nothing here imports the engine's dual code: the description of every network is computed from numpy
re-implementations of its operators, and checked against onnxruntime."""
