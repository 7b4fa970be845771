"""Small VNN-LIB texts shared by the specs and verify tests."""

#: A VNN-LIB 2.0 query over one network f: X (1x2) in [-1, 1]^2, unsafe when Y[0,0] >= 100. ``{t}`` is the
#: declared element type of X and Y (``Real``, ``float32``, ...).
BOX_QUERY = """(vnnlib-version <2.0>)
(declare-network f
    (declare-input X {t} [1,2])
    (declare-output Y {t} [1,2])
)
(assert (>= X[0,0] -1.0))
(assert (<= X[0,0] 1.0))
(assert (>= X[0,1] -1.0))
(assert (<= X[0,1] 1.0))
(assert (>= Y[0,0] 100.0))
"""
