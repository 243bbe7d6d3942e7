"""Per client and round: bytes up and down, FLOPs, simulated seconds, joules and dollars.

Bytes are the payload tensors' exact sizes; FLOPs are what the client's local update
executed (``models/flops.py``); seconds, joules and dollars come from the device profile
(``edge/costs.py``). A synchronous round lasts as long as its slowest participant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgefm.edge.costs import update_cost
from edgefm.edge.devices import DeviceProfile


def nbytes(tensors: Mapping[str, Any]) -> int:
    """Exact payload size of named tensors: element count times element size, summed (torch is
    not imported here: a Flower run's launcher reads ledgers without it)."""
    return int(sum(t.numel() * t.element_size() for t in tensors.values()))


class Ledger:
    def __init__(self) -> None:
        self.clients: list[dict[str, Any]] = []  # one row per client per round
        self.rounds: list[dict[str, Any]] = []  # one row per round
        self.sim_elapsed_s = 0.0

    def record_client(
        self,
        rnd: int,
        device: DeviceProfile,
        payload_down: dict,
        payload_up: dict | None,
        flops: float,
        num_examples: int,
        status: str = "ok",
        reason: str = "",
        extra_bytes_up: int = 0,
        metrics: dict | None = None,
        extra: dict | None = None,
        extra_bytes_down: int = 0,
        server_flops: float = 0.0,
        server_seconds: float = 0.0,
    ) -> dict[str, Any]:
        down = nbytes(payload_down) + extra_bytes_down
        up = (nbytes(payload_up) if payload_up is not None else 0) + extra_bytes_up
        cost = update_cost(flops, up, down, device)
        # work done for this client on a server during its round (split learning's edge part):
        # the device waits for it, so it adds to the client's seconds, not to its joules
        server = {"server_flops": server_flops, "server_s": server_seconds} if server_flops or server_seconds else {}
        row = {
            "round": rnd,
            "client": device.device_id,
            "tier": device.tier,
            "status": status,
            "reason": reason,
            "num_examples": num_examples,
            "flops": flops,
            "bytes_up": up,
            "bytes_down": down,
            "download_s": cost["down"].seconds,
            "compute_s": cost["compute"].seconds,
            "upload_s": cost["up"].seconds,
            "seconds": cost["total"].seconds + server_seconds,
            "joules": cost["total"].joules,
            "dollars": cost["total"].dollars,
            **server,
            **{f"client_{k}": v for k, v in (metrics or {}).items()},
            **(extra or {}),
        }
        self.clients.append(row)
        return row

    def close_round(self, rnd: int, metrics: dict[str, float], wall_s: float, waited_s: float = 0.0) -> dict[str, Any]:
        """The round's summary; ``waited_s``: the deadline it cut stragglers at (0: none), which is its length."""
        rows = [r for r in self.clients if r["round"] == rnd]
        # a deadline that cut stragglers ends the round (those in time finished before it)
        sim_round = waited_s or max((r["seconds"] for r in rows), default=0.0)
        self.sim_elapsed_s += sim_round
        summary = {
            "round": rnd,
            "participants": len(rows),
            "accepted": sum(r["status"] == "ok" for r in rows),
            "rejected": sum(r["status"] == "rejected" for r in rows),
            "dropped": sum(r["status"] == "dropped" for r in rows),
            "bytes_up": sum(r["bytes_up"] for r in rows),
            "bytes_down": sum(r["bytes_down"] for r in rows),
            "flops": sum(r["flops"] for r in rows),
            **(
                {"server_flops": sum(r.get("server_flops", 0.0) for r in rows)}
                if any("server_flops" in r for r in rows)
                else {}
            ),
            "joules": sum(r["joules"] for r in rows),
            "dollars": sum(r["dollars"] for r in rows),
            "sim_round_s": sim_round,
            "sim_elapsed_s": self.sim_elapsed_s,
            "wall_s": wall_s,
            **metrics,
        }
        self.rounds.append(summary)
        return summary

    # -- persistence (checkpoints) ------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"clients": self.clients, "rounds": self.rounds, "sim_elapsed_s": self.sim_elapsed_s}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Ledger:
        ledger = cls()
        ledger.clients = list(state["clients"])
        ledger.rounds = list(state["rounds"])
        ledger.sim_elapsed_s = float(state["sim_elapsed_s"])
        return ledger

    def totals(self) -> dict[str, float]:
        return {
            "bytes_up": sum(r["bytes_up"] for r in self.rounds),
            "bytes_down": sum(r["bytes_down"] for r in self.rounds),
            "flops": sum(r["flops"] for r in self.rounds),
            "joules": sum(r["joules"] for r in self.rounds),
            "dollars": sum(r["dollars"] for r in self.rounds),
            "sim_seconds": self.sim_elapsed_s,
            "wall_seconds": sum(r["wall_s"] for r in self.rounds),
        }
