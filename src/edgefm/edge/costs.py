"""Time, energy and money of local compute and of transfers, from FLOPs, bytes and a profile.

The simplest model that is still honest about heterogeneity: compute time is FLOPs over the
device's sustained rate; a transfer costs one latency plus bytes over bandwidth; energy is
FLOPs times joules-per-FLOP plus bytes times joules-per-byte; money is the time the device is
busy times its hourly price. A round's wall-clock is its slowest participant (synchronous FL).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgefm.edge.devices import DeviceProfile


@dataclass(frozen=True)
class Cost:
    seconds: float
    joules: float
    dollars: float

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.seconds + other.seconds, self.joules + other.joules, self.dollars + other.dollars)

    def to_dict(self) -> dict:
        return asdict(self)


def compute_cost(flops: float, device: DeviceProfile) -> Cost:
    seconds = flops / device.flops_per_s
    return Cost(seconds, flops * device.energy_per_flop, seconds / 3600 * device.cost_per_hour)


def transfer_cost(nbytes: float, device: DeviceProfile, direction: str) -> Cost:
    """Cost of sending (``"up"``) or receiving (``"down"``) ``nbytes`` in one message."""
    if direction not in ("up", "down"):
        raise ValueError(f"direction={direction!r}: expected 'up' or 'down'")
    if nbytes <= 0:
        return Cost(0.0, 0.0, 0.0)
    bandwidth = device.uplink_bps if direction == "up" else device.downlink_bps
    seconds = device.latency_s + nbytes / bandwidth
    return Cost(seconds, nbytes * device.energy_per_byte, seconds / 3600 * device.cost_per_hour)


def update_cost(flops: float, bytes_up: float, bytes_down: float, device: DeviceProfile) -> dict[str, Cost]:
    """Download, local compute and upload of one client update, each and in total."""
    down = transfer_cost(bytes_down, device, "down")
    comp = compute_cost(flops, device)
    up = transfer_cost(bytes_up, device, "up")
    return {"down": down, "compute": comp, "up": up, "total": down + comp + up}
