import numpy as np
import pytest

from edgefm.edge import TIERS, compute_cost, sample_population, transfer_cost, update_cost


def test_population_mix_is_exact_and_seeded():
    mix = {"low_end_phone": 0.5, "laptop": 0.3, "edge_server": 0.2}
    a = sample_population(10, mix, 0.2, np.random.default_rng(0))
    b = sample_population(10, mix, 0.2, np.random.default_rng(0))
    assert a == b
    tiers = [d.tier for d in a]
    assert tiers.count("low_end_phone") == 5 and tiers.count("laptop") == 3 and tiers.count("edge_server") == 2
    assert [d.device_id for d in a] == list(range(10))
    for d in a:
        base = TIERS[d.tier]
        assert 0.8 * base.flops_per_s <= d.flops_per_s <= 1.2 * base.flops_per_s
    assert len({d.flops_per_s for d in a}) == 10  # each device jittered on its own
    assert sample_population(10, mix, 0.2, np.random.default_rng(1)) != a  # another seed, other devices


def test_costs_known_answers():
    phone = TIERS["low_end_phone"]  # 20 GFLOP/s, 2 W, 5 Mbit/s up, 60 ms latency
    c = compute_cost(40e9, phone)
    assert c.seconds == pytest.approx(2.0)
    assert c.joules == pytest.approx(4.0)  # 2 s at 2 W
    up = transfer_cost(625_000, phone, "up")  # 5 Mbit = 625 kB at 5 Mbit/s -> 1 s + latency
    assert up.seconds == pytest.approx(1.06)
    assert up.joules == pytest.approx(625_000 * 3e-6)
    assert transfer_cost(0, phone, "up").seconds == 0
    total = update_cost(40e9, 625_000, 0, phone)["total"]
    assert total.seconds == pytest.approx(3.06)


def test_faster_tiers_are_faster():
    flops = [TIERS[t].flops_per_s for t in ("low_end_phone", "high_end_phone", "edge_server")]
    assert flops == sorted(flops)
