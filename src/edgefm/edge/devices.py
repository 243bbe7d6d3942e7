"""Device profiles, named tiers and seeded population sampling.

A :class:`DeviceProfile` is what every part of edgefm reads about a device: how fast it
computes, how much memory it has, how fast it talks, what a FLOP and a byte cost in energy and
an hour in money. Pure arithmetic; no torch.

Tier numbers are *sustained* figures for fp32 training-style workloads, well below datasheet
peaks, and the energy per FLOP is board power divided by that sustained rate. Sources:
- IoT camera node: a Raspberry Pi 4 class board (4x Cortex-A72 at 1.5 GHz, 48 GFLOP/s fp32
  NEON peak; community PyTorch/TFLite benchmarks sustain roughly 5-10 GFLOP/s), ~6 W, Wi-Fi.
- Phones: Ignatov et al., "AI Benchmark: All About Deep Learning on Smartphones in 2019"
  (ICCVW 2019) — low-end SoCs sustain ~10-30 GFLOP/s fp32 on CNNs, flagships ~100-300
  through GPU/NPU delegates; ~2-4 W under sustained load.
- LTE/5G radio energy: Huang et al., "A Close Examination of Performance and Power
  Characteristics of 4G LTE Networks" (MobiSys 2012) — ~1.5-2.5 W uplink at a few Mbit/s,
  i.e. a few microjoules per byte; Narayanan et al., "A First Look at Commercial 5G
  Performance on Smartphones" (WWW 2020) for flagship-class uplinks.
- Embedded GPU board: NVIDIA Jetson Orin Nano datasheet (1.28 TFLOP/s fp16 peak on the GPU,
  7-15 W); we assume ~40% of peak sustained in fp32/fp16 mixed training.
- Laptop: a 4-8 core x86 CPU at ~28 W sustains ~200-400 GFLOP/s in PyTorch GEMMs (our own
  2-core cloud VM sustains ~170 GFLOP/s on MiniLM training).
- Edge server: an NVIDIA T4 (8.1 TFLOP/s fp32 peak, 70 W) at ~50% of peak; 1 Gbit/s Ethernet.
- Money: spot/on-demand cloud prices (a T4 instance ~$0.35-0.5/h) and amortised device cost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

GB = 1024**3
MBIT = 1e6 / 8  # bytes per second in one Mbit/s


@dataclass(frozen=True)
class DeviceProfile:
    """One device. Units: FLOP/s, bytes, bytes/s, seconds, joules, dollars per hour."""

    device_id: int
    tier: str
    flops_per_s: float  # sustained training throughput
    memory_bytes: float  # memory a training job may use
    uplink_bps: float  # bytes per second
    downlink_bps: float  # bytes per second
    latency_s: float  # one-way network latency per message
    energy_per_flop: float  # joules per FLOP
    energy_per_byte: float  # joules per byte sent or received
    cost_per_hour: float  # dollars per hour of use

    def to_dict(self) -> dict:
        return asdict(self)


def _tier(
    tier: str,
    gflops: float,
    mem_gb: float,
    up_mbit: float,
    down_mbit: float,
    latency_ms: float,
    watts: float,
    uj_per_byte: float,
    cost_per_hour: float,
) -> DeviceProfile:
    flops = gflops * 1e9
    return DeviceProfile(
        device_id=-1,
        tier=tier,
        flops_per_s=flops,
        memory_bytes=mem_gb * GB,
        uplink_bps=up_mbit * MBIT,
        downlink_bps=down_mbit * MBIT,
        latency_s=latency_ms / 1e3,
        energy_per_flop=watts / flops,
        energy_per_byte=uj_per_byte * 1e-6,
        cost_per_hour=cost_per_hour,
    )


# Named tiers (see the module docstring for where each number comes from).
TIERS: dict[str, DeviceProfile] = {
    "iot_camera": _tier("iot_camera", 8, 1.5, 20, 50, 10, 6.0, 0.5, 0.01),
    "low_end_phone": _tier("low_end_phone", 20, 1.5, 5, 20, 60, 2.0, 3.0, 0.02),
    "high_end_phone": _tier("high_end_phone", 150, 4, 20, 100, 30, 4.0, 1.5, 0.05),
    "embedded_gpu": _tier("embedded_gpu", 500, 6, 50, 100, 10, 12.0, 0.5, 0.08),
    "laptop": _tier("laptop", 300, 12, 50, 200, 15, 28.0, 0.3, 0.10),
    "edge_server": _tier("edge_server", 4000, 15, 1000, 1000, 2, 70.0, 0.05, 0.45),
}

# The device that runs the centralized baseline (all data pooled in a datacenter).
DATACENTER = _tier("datacenter", 4000, 15, 1000, 1000, 2, 70.0, 0.05, 0.45)


def sample_population(n: int, tiers: dict[str, float], jitter: float, rng: np.random.Generator) -> list[DeviceProfile]:
    """``n`` devices drawn from the tier mix, each number jittered by a factor in [1-j, 1+j].

    Tiers are assigned by largest-remainder rounding of ``n * weight`` (so the mix is exact,
    not left to chance with 10 devices), then shuffled by ``rng``.
    """
    if n < 1:
        raise ValueError(f"n={n}: expected at least one device")
    names = [t for t, w in tiers.items() if w > 0]
    weights = np.array([tiers[t] for t in names], dtype=float)
    weights = weights / weights.sum()
    exact = weights * n
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    assigned = np.repeat(np.arange(len(names)), counts)
    rng.shuffle(assigned)

    devices = []
    for device_id, t in enumerate(assigned):
        base = TIERS[names[t]]
        f = rng.uniform(1 - jitter, 1 + jitter, size=5)
        devices.append(
            replace(
                base,
                device_id=device_id,
                flops_per_s=float(base.flops_per_s * f[0]),
                memory_bytes=float(base.memory_bytes * f[1]),
                uplink_bps=float(base.uplink_bps * f[2]),
                downlink_bps=float(base.downlink_bps * f[3]),
                latency_s=float(base.latency_s * f[4]),
            )
        )
    return devices
