"""IMP's inner step: the seller's profit along one model's price, the other prices fixed, and its
maximum (model and notation: ``lmaas.py``, ``docs/lmaas.md``).

With the other prices fixed, customer i's best alternative to model m is fixed: its worst-case
profit b_i >= 0 ("none" is 0) and the margin ``fixed_i`` the seller earns from it. Renting m at
unit cost x = p + e_im (price plus energy cost per hour), with w = alpha_i a_m, the customer's
best profit is

    U(x) = w ln(1 + beta cap) - x cap            while the cap binds (x <= w / (1/beta + cap)),
    U(x) = w ln(beta w / x) - w + x / beta       until t* reaches 0 at x = beta w,
    U(x) = 0                                     after,

which falls strictly while t* > 0. So customer i takes m exactly while p is below a threshold
p_i (where U = b_i): linear in the capped part, and in between, with y = x / (beta w),
y - ln y = 1 + b_i / w, i.e. y = -W0(-exp(-1 - b_i / w)) (Lambert W, by Halley's iteration).
The seller's profit is

    F(p) = base + sum_{i: p < p_i} [ t_i(p) (p - c_m) - fixed_i ].

Between two neighbouring thresholds the buyers are fixed and each term is concave in p for
p >= c_m (t = min(cap, w / (p + e) - 1/beta): a linear piece, then (w/(p+e) - 1/beta)(p - c),
concave when c + e >= 0, joined at a concave kink), so F is concave on every piece and drops
where a buyer leaves. Its maximum is therefore at a piece's right end (just below a threshold),
its left end, or where F' = 0 inside (bisection on F'). With at most ``EXACT_LIMIT`` possible
buyers :func:`search` takes all three over every piece (O(K^2)): the exact maximum. Above, the
thresholds are dense, no buyer moves F much, and a grid refined twice finds it; that is IMP's
behaviour at scale (100,000 customers), where no exhaustive reference exists. A coarse grid is
always added, for the part of the range below cost where concavity can fail.

The profit of every chosen price is recomputed from the customers' own utilities (as RSR
decides), so what IMP reports is exact even where rounding moves a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXACT_LIMIT = 256  # possible buyers up to which every piece of the line is searched (O(K^2))
TOP = 8  # best candidates re-evaluated exactly
SAMPLE_FROM = 8192  # possible buyers from which the first grid looks at a sample of them
STRIDE = 16  # 1 in STRIDE
ZOOM = 9  # points of each finer grid
NUDGE = 1e-7  # relative step below a threshold: clear of rounding, worth ~1e-7 of a sale


@dataclass
class Line:
    """Profit along p_m over the K customers who would take m at its lowest price."""

    cost: float
    beta: float
    base: float  # profit with no buyer of m (training costs already subtracted)
    w: np.ndarray  # alpha_i a_m
    e: np.ndarray  # energy cost per hour
    cap: np.ndarray  # longest rental (horizon or energy cap)
    b: np.ndarray  # best alternative's worst-case profit, >= 0
    fixed: np.ndarray  # the seller's margin from that alternative
    lower: np.ndarray  # m has the lower index (wins ties)
    thresholds: np.ndarray  # p_i, highest first (customers are in this order)

    def utility(self, ps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Durations and worst-case profits [G, K] at prices ``ps`` [G, 1], computed as RSR does."""
        unit = ps + self.e[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(unit > 0, self.w / unit - 1.0 / self.beta, np.inf)
        t = np.minimum(np.maximum(t, 0.0), self.cap)
        return t, self.w * np.log1p(self.beta * t) - unit * t

    def exact(self, ps) -> np.ndarray:
        """F at each price, buyers decided by their utilities (ties to the lower index)."""
        ps = np.atleast_1d(np.asarray(ps, dtype=float))[:, None]
        t, u = self.utility(ps)
        wins = (u > self.b) | ((u == self.b) & (u > 0) & self.lower)
        return self.base + np.where(wins, t * (ps - self.cost) - self.fixed, 0.0).sum(axis=1)

    def terms(self, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each customer's term of F and of F' at each price, as if it bought: two [len(xs), K]."""
        unit = xs[:, None] + self.e[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            raw = np.where(unit > 0, self.w / unit - 1.0 / self.beta, np.inf)
            slope = np.where(raw >= self.cap, 0.0, -self.w / unit**2)  # the left slope at t = 0 too
        t = np.minimum(np.maximum(raw, 0.0), self.cap)
        margin = xs[:, None] - self.cost
        return t * margin - self.fixed, t + margin * slope

    def buyers(self, xs: np.ndarray, left: bool = False) -> np.ndarray:
        """How many customers buy at each price (left=True: just below it): the first so many,
        customers being sorted by threshold, highest first."""
        asc = self.thresholds[::-1]
        return len(asc) - np.searchsorted(asc, xs, side="left" if left else "right")

    def both(self, xs: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """F and F' at xs[j] with the first n[j] customers buying, all points at once."""
        val, slope = self.terms(xs)
        mask = np.arange(len(self.w))[None, :] < n[:, None]
        return self.base + np.where(mask, val, 0.0).sum(axis=1), np.where(mask, slope, 0.0).sum(axis=1)

    def value(self, xs: np.ndarray, n: np.ndarray, stride: int = 1) -> np.ndarray:
        """F at xs[j] with the first n[j] customers buying; ``stride`` > 1 estimates it from every
        stride-th customer (a sample spread over the thresholds)."""
        if len(self.w) <= EXACT_LIMIT:
            return self.both(xs, n)[0]
        out = np.empty(len(xs))
        e_min = float(self.e.min())
        for j, (x, m) in enumerate(zip(xs.tolist(), n.tolist(), strict=True)):
            part = slice(0, m, stride)
            if x + e_min > 0:  # one price, only its buyers: O(buyers) and no masks
                t = np.minimum(np.divide(self.w[part], x + self.e[part]) - 1.0 / self.beta, self.cap[part])
                total = (x - self.cost) * t.sum() - self.fixed[part].sum()
            else:
                total = self.terms(np.array([x]))[0][0, part].sum()
            out[j] = self.base + stride * total
        return out


@dataclass
class Responses:
    """Every customer's RSR response to every model at the current prices, kept up to date as IMP
    moves one price at a time (only that model's column changes), with each customer's best and
    second-best model so that a line's best alternative costs O(N), not O(NM)."""

    inst: object  # lmaas.Instance
    prices: np.ndarray
    e: np.ndarray  # energy cost per hour [N, M]
    cap: np.ndarray  # longest rental [N, M]
    t: np.ndarray  # RSR durations [N, M] (lmaas.optimal_durations)
    u: np.ndarray  # worst-case profits [N, M] (lmaas.profit)
    u_lo: np.ndarray  # worst-case profits at the lowest prices [N, M]

    def __post_init__(self) -> None:
        self.prices = self.prices.copy()
        self._rank()

    def _rank(self) -> None:
        rows = np.arange(len(self.u))
        self.first = np.argmax(self.u, axis=1)  # the lowest index among equals, as RSR picks
        if self.u.shape[1] > 1:
            rest = self.u.copy()
            rest[rows, self.first] = -np.inf
            self.second = np.argmax(rest, axis=1)
        else:
            self.second = self.first

    def move(self, m: int, price: float) -> None:
        """Set model m's price; recompute its column as lmaas.optimal_durations/profit do."""
        inst = self.inst
        self.prices[m] = price
        unit = price + self.e[:, m]
        w = inst.alpha * inst.accuracy[m]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(unit > 0, w / unit - 1.0 / inst.beta, inst.horizon)
        self.t[:, m] = np.clip(t, 0.0, self.cap[:, m])
        self.u[:, m] = w * np.log1p(inst.beta * self.t[:, m]) - unit * self.t[:, m]
        self._rank()

    def line(self, m: int) -> Line:
        """Model m's price line at the current prices."""
        inst = self.inst
        n = len(self.u)
        rows = np.arange(n)
        if self.u.shape[1] > 1:
            best_j = np.where(self.first == m, self.second, self.first)
            best_u = self.u[rows, best_j]
            fixed = np.where(best_u > 0, self.t[rows, best_j] * (self.prices[best_j] - inst.cost[best_j]), 0.0)
            best_j = np.where(best_u > 0, best_j, self.u.shape[1])  # "none" ranks after every model
            best_u = np.maximum(best_u, 0.0)  # "none" is always available
        else:
            best_u, best_j, fixed = np.zeros(n), np.full(n, 1), np.zeros(n)
        lower = m < best_j  # m wins ties
        u_lo = self.u_lo[:, m]
        # U never rises with the price, so one who would not take m at its lowest price never does
        k = np.flatnonzero((u_lo > best_u) | ((u_lo == best_u) & (u_lo > 0) & lower))
        w, e, cap = inst.alpha[k] * inst.accuracy[m], self.e[k, m], self.cap[k, m]
        p_hat = thresholds(w, e, cap, best_u[k], float(inst.beta))
        order = np.argsort(-p_hat)
        k = k[order]
        base = float(fixed.sum() - inst.train_cost.sum())
        return Line(float(inst.cost[m]), float(inst.beta), base, w[order], e[order], cap[order],
                    best_u[k], fixed[k], lower[k], p_hat[order])  # fmt: skip


def thresholds(w: np.ndarray, e: np.ndarray, cap: np.ndarray, b: np.ndarray, beta: float) -> np.ndarray:
    """The price p_i below which U_i(p + e_i) > b_i (module docstring); w > 0 and cap > 0."""
    log_c = np.log1p(beta * cap)
    capped = b >= w * log_c - w / (1.0 / beta + cap) * cap
    return np.where(capped, (w * log_c - b) / cap, beta * w * _y(1.0 + b / w)) - e


def _y(k: np.ndarray) -> np.ndarray:
    """The root y in (0, 1] of y - ln y = k >= 1, i.e. -W0(-exp(-k)): Halley's iteration on
    exp(-z) + z = k for z = -ln y, from the series z ~ q + q^2/6 + q^3/72 (q = sqrt(2(k - 1)))
    near the branch point and z ~ k - exp(-k) away from it; two steps reach ~1e-16."""
    d = np.maximum(k - 1.0, 0.0)
    q = np.sqrt(2.0 * d)
    z = np.where(d < 2.0, q + q * q / 6.0 + q**3 / 72.0, k - np.exp(-k))
    for _ in range(2):
        ez = np.exp(-z)
        h, h1 = ez + z - k, 1.0 - ez
        with np.errstate(divide="ignore", invalid="ignore"):
            step = 2.0 * h * h1 / (2.0 * h1 * h1 - h * ez)
        z = np.where(np.isfinite(step) & (h1 > 0), z - step, z)  # z = 0 (k = 1) is exact already
    return np.exp(-z)


def search(ln: Line, lo: float, hi: float, grid: int = 32) -> tuple[float, float]:
    """The best price in [lo, hi] and its exact profit (module docstring)."""
    s = ln.thresholds
    pts: list[tuple[np.ndarray, np.ndarray]] = []  # (prices, F there)
    if len(s) <= EXACT_LIMIT:
        inside = np.unique(s[(s > lo) & (s <= hi)])
        a, b = np.concatenate([[lo], inside]), np.concatenate([inside, [hi]])
        n = ln.buyers(a)  # a piece's buyers: those at its left end
        va, da = ln.both(a, n)
        vb, db = ln.both(b, n)  # at the right end from below: a left limit where b is a threshold
        # a threshold itself is where a buyer leaves: step off it, right for a piece's left end
        # and left for its right end, so that rounding cannot decide which side a price is on
        up, down = a + NUDGE * np.maximum(1.0, np.abs(a)), b - NUDGE * np.maximum(1.0, np.abs(b))
        pts += [(np.concatenate([a[:1], up[1:]]), va), (np.concatenate([down[:-1], b[-1:]]), vb)]
        # F' falls from + to - inside a piece: a root to bisect for, unless the tangent at the
        # left end (above the concave F) stays below the best end point
        rising = (da > 0) & (db < 0) & (va + da * (b - a) > max(va.max(), vb.max()))
        if rising.any():
            a, b, n = a[rising], b[rising], n[rising]
            for _ in range(40):
                mid = 0.5 * (a + b)
                up = ln.both(mid, n)[1] > 0
                a, b = np.where(up, mid, a), np.where(up, b, mid)
            x = 0.5 * (a + b)
            pts.append((x, ln.both(x, n)[0]))
        if lo < ln.cost:  # below cost the pieces need not be concave: a grid as well
            g = np.linspace(lo, min(hi, ln.cost), 16)
            pts.append((g, ln.value(g, ln.buyers(g))))
    else:
        # dense thresholds: a grid (on a 1-in-STRIDE sample of the buyers, spread over the
        # thresholds, when there are very many), then two finer grids around its best point
        g = np.linspace(lo, hi, grid)
        stride = STRIDE if len(s) > SAMPLE_FROM else 1
        vals = ln.value(g, ln.buyers(g), stride)
        for _ in range(2):
            k = int(np.argmax(vals))
            g = np.linspace(g[max(k - 1, 0)], g[min(k + 1, len(g) - 1)], ZOOM)
            vals = ln.value(g, ln.buyers(g))
            pts.append((g, vals))
    x, vals = np.concatenate([p for p, _ in pts]), np.concatenate([v for _, v in pts])
    few = TOP if len(s) <= EXACT_LIMIT else 3  # the refined grid's best points are neighbours
    top = np.clip(x[np.argsort(-vals, kind="stable")[:few]], lo, hi)
    exact = ln.exact(top)
    k = int(np.argmax(exact))
    return float(top[k]), float(exact[k])
