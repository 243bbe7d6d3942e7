"""The shared model of the edge: device profiles and the cost of compute and transfers."""

from edgefm.edge.costs import Cost, compute_cost, transfer_cost, update_cost
from edgefm.edge.devices import TIERS, DeviceProfile, sample_population

__all__ = ["TIERS", "Cost", "DeviceProfile", "compute_cost", "sample_population", "transfer_cost", "update_cost"]
