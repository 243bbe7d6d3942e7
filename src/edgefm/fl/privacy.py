"""Client-level differential privacy (``privacy.*``): DP-FedAvg with a maintained accountant.

DP-FedAvg (McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private Recurrent Language
Models", ICLR 2018): each participant's change from the global state is clipped to L2 norm C
(``privacy.clip``, over every tensor it sends), the clipped changes are summed, Gaussian noise
of standard deviation sigma C is added to every coordinate, and the sum is divided by the
*expected* number of participants (q N: the fixed-denominator estimator, whose sensitivity is
C / (q N) whoever takes part). Each client is one unit of privacy, so its influence is bounded
by C whatever its data size (the sample weights of FedAvg are not used).

The privacy loss is tracked with opacus's RDP accountant (Mironov, "Renyi Differential
Privacy", CSF 2017; the subsampled Gaussian of Mironov, Talwar, Zhang 2019), one step per round
at sampling rate q = the share of clients sampled a round (``fraction``; the engine samples a
fixed number without replacement where the analysis assumes Poisson sampling, the usual
approximation, as in opacus). ``privacy.epsilon`` calibrates sigma so that the whole run
(``rounds`` steps) spends exactly that epsilon at ``privacy.delta``; ``privacy.noise_multiplier``
sets sigma directly. The epsilon spent so far is in every round's metrics (``dp_epsilon``).

Heterogeneous payloads (masks) are clipped over the coordinates a client trained; noise goes on
every coordinate of the group.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from edgefm.fl.aggregate import Tensors


def sample_rate(fraction: float, clients: int) -> float:
    """q: the share of the population the engine samples each round."""
    return max(1, int(round(fraction * clients))) / clients


def noise_multiplier(epsilon: float, delta: float, q: float, rounds: int) -> float:
    """sigma such that ``rounds`` subsampled Gaussian steps at rate q spend (epsilon, delta)."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=q, steps=rounds, accountant="rdp")
    )


def spent(sigma: float, q: float, rounds: int, delta: float) -> float:
    """The epsilon at ``delta`` after ``rounds`` steps (RDP accountant)."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(sigma, q, rounds)]
    return float(accountant.get_epsilon(delta))


def dp_mean(
    payloads: Sequence[Tensors],
    previous: Tensors,
    clip: float,
    sigma: float,
    denominator: float,
    generator: torch.Generator,
    masks: Sequence[Tensors] | None = None,
) -> tuple[Tensors, dict[str, float]]:
    """previous + (sum of the clipped changes + N(0, (sigma clip)^2)) / denominator, and the
    share of clients whose change was clipped."""
    deltas = []
    for i, u in enumerate(payloads):
        d = {}
        for k, prev in previous.items():
            if k in u:
                change = u[k].double() - prev.double()
                d[k] = change * masks[i][k].double() if masks is not None else change
        norm = float(
            torch.sqrt(sum((x.pow(2).sum() for x in d.values()), start=torch.tensor(0.0, dtype=torch.float64)))
        )
        scale = min(1.0, clip / norm) if norm > 0 else 1.0
        deltas.append(({k: x * scale for k, x in d.items()}, norm > clip))
    out = {}
    for k, prev in previous.items():
        total = sum((d[k] for d, _ in deltas if k in d), start=torch.zeros_like(prev, dtype=torch.float64))
        noise = torch.randn(prev.shape, generator=generator, dtype=torch.float64) * (sigma * clip)
        out[k] = (prev.double() + (total + noise) / denominator).to(prev.dtype)
    return out, {"dp_clipped": float(sum(c for _, c in deltas))}
