"""Test seams the Flower ServerApp imports by name (``edgefm-transport``): it runs in another
process, which finds this folder on ``PYTHONPATH`` (``tests/test_flower.py`` puts it there)."""

from __future__ import annotations

from edgefm.fl.flower import FlowerTransport


class Misaddressed(FlowerTransport):
    """Client 1's round-1 training task names another client, so its node raises."""

    def _message(self, cid, rnd, content, kind):
        if cid == 1 and rnd == 1 and kind == "train":
            content["task"]["client"] = 99
        return super()._message(cid, rnd, content, kind)
