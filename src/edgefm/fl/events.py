"""What a run tells its caller, and who takes part in each round: light enough to import in a
launcher that never imports torch (``engine=flower``: the launcher only follows the run folder
while the ServerApp and the client actors train, so torch's few hundred MB are not in it).

:class:`Callbacks` are the engine's progress events (the CLI renders them as progress bars, a
tenant's stop rule answers ``should_stop``); :func:`sample_clients` is the round's participants,
the same in every process of a run since it is derived from the seed alone (:func:`seed_for`).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Callbacks:
    """Progress events; every method is a no-op here."""

    def on_run_start(self, rounds: int, start_round: int) -> None: ...
    def on_round_start(self, rnd: int, clients: list[int]) -> None: ...
    def on_client_end(self, rnd: int, client_id: int, row: dict[str, Any]) -> None: ...
    def on_round_end(self, summary: dict[str, Any]) -> None: ...

    def should_stop(self, summary: dict[str, Any]) -> bool:
        """The caller's stop rule, asked after every round (e.g. a tenant's target or deadline)."""
        return False


def seed_for(*parts: int) -> int:
    """A 63-bit seed derived from integers (run seed, round, client): no global RNG state."""
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def sample_clients(seed: int, rnd: int, n: int, fraction: float) -> list[int]:
    """``max(1, round(fraction * n))`` clients, without replacement, seeded by (seed, round)."""
    k = max(1, int(round(fraction * n)))
    if k >= n:
        return list(range(n))
    rng = np.random.default_rng(seed_for(seed, 2000 + rnd))
    return sorted(rng.choice(n, size=k, replace=False).tolist())
