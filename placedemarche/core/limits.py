"""Size limits the evaluator and the plugins share: past which size work is approximated or refused.

They sit in the plugin contract because clusterers and reducers (plugins) apply them as much
as the evaluator does, and a plugin imports nothing above the contract and the shared helpers.
"""

from __future__ import annotations

from placedemarche.core.errors import PlaceDeMarcheError

#: Products past which the evaluator approximates (the ``kmeans`` plugin's default too).
APPROXIMATE_ABOVE = 20_000
#: Largest dense copy of a sparse matrix the evaluator makes for a clusterer without sparse support.
DENSE_LIMIT_BYTES = 2 * 1024 ** 3


def check_densify(shape: tuple[int, int], who: str,
                  instead: str = "cluster on the reduced space (--cluster-on reduced) or use kmeans") -> None:
    """Refuse to densify a sparse matrix larger than :data:`DENSE_LIMIT_BYTES` (as float32):
    one line naming what to do ``instead``."""
    needed = shape[0] * shape[1] * 4
    if needed > DENSE_LIMIT_BYTES:
        raise PlaceDeMarcheError(
            f"{who} takes no sparse input, and the sparse features ({shape[0]} x {shape[1]}) would "
            f"need {needed / 1024 ** 3:.1f} GB dense: {instead}")


def refuse_above(name: str, rows: int, limit: int, why: str) -> None:
    """For clusterers whose memory or time grows with the square of the rows: a one-line error
    past ``limit`` rows, naming the scalable alternative, rather than exhausting memory."""
    if rows > limit:
        raise PlaceDeMarcheError(
            f"{name}: {rows} rows is more than its limit of {limit} ({why}); use kmeans "
            f"(linear in the rows), or raise the limit with "
            f"'{name}:max_rows={rows}' if the memory is there")
