"""Gradient multi-objective solvers: pure functions on a Jacobian ``J`` (k objectives x n
parameters) or its Gram matrix ``G = J J^T``.

Every solver returns weights ``w`` (shape (k,)) and the update direction is ``d = J^T w``
(descent moves parameters by ``-lr * d``), so a caller can compute only the small Gram matrix
and combine the gradients itself. Use :func:`solve` for one uniform call, :data:`SOLVERS` for
what each solver needs and whether it is invariant to loss scale.
"""

from hybridmoo.gradmoo.groups import aggregate_groups
from hybridmoo.gradmoo.linalg import direction, gram, validate_gram
from hybridmoo.gradmoo.registry import SOLVERS, SolverSpec, get_solver, solve

__all__ = ["SOLVERS", "SolverSpec", "aggregate_groups", "direction", "get_solver", "gram",
           "solve", "validate_gram"]
