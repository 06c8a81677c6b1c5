"""Next-basket recommendation: metrics, the standard baselines and the shipped method.

Pure numpy, no I/O. A *history* is a user's baskets in time order, a basket a sequence of
integer item ids ``0 … n_items-1``; the task is to rank items for the user's next basket.

- Metrics (``recall_at_k``, ``ndcg_at_k``): as in "A Next Basket Recommendation Reality Check"
  (Li et al., TOIS 2023); NDCG's ideal DCG is taken over the WHOLE truth basket.
- Baselines: G-TopFreq, P-TopFreq, GP-TopFreq and TIFU-KNN (Hu et al., SIGIR 2020) as the
  paper's public code computes it (Euclidean user kNN, decayed grouped user vectors).
- The shipped method, ``Nbr``: a TIFU-style decayed repeat vector plus a low-rank
  *transition* model (history vector -> next basket, a ridge regression in the span of the top
  right singular vectors of the decayed user-item matrix) plus a recency-aware popularity
  prior. Its scoring is two small matrix products and a sum, so it exports to a compact ONNX
  graph (``edge_agent.core.nbr_onnx``); users unseen at training time are served the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
Basket = Sequence[int]
History = Sequence[Basket]

# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def recall_at_k(truth: Iterable[int], ranked: Sequence[int], k: int) -> float:
    """|top-k ∩ truth| / |truth| (0 for an empty truth basket)."""
    truth_set = set(truth)
    if not truth_set:
        return 0.0
    hits = sum(1 for item in ranked[:k] if item in truth_set)
    return hits / len(truth_set)


def ndcg_at_k(truth: Iterable[int], ranked: Sequence[int], k: int) -> float:
    """DCG of the top-k list over the ideal DCG of the WHOLE truth basket.

    Binary gains, ``1 / log2(rank + 1)`` discount with ranks from 1. The ideal is not cut at
    ``k`` (the Reality-Check paper's choice), so a truth basket larger than ``k`` can never
    reach 1.
    """
    truth_set = set(truth)
    if not truth_set:
        return 0.0
    dcg = sum(
        1.0 / math.log2(rank + 2) for rank, item in enumerate(ranked[:k]) if item in truth_set
    )
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(len(truth_set)))
    return dcg / ideal


def evaluate(
    truths: Sequence[Basket], rankings: Sequence[Sequence[int]], ks: Sequence[int] = (10, 20)
) -> dict[str, float]:
    """Mean Recall@k and NDCG@k over users, keys ``recall@10``, ``ndcg@10``, …"""
    if len(truths) != len(rankings):
        raise ValueError("one ranking per truth basket")
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = float(
            np.mean([recall_at_k(t, r, k) for t, r in zip(truths, rankings, strict=True)])
        )
        out[f"ndcg@{k}"] = float(
            np.mean([ndcg_at_k(t, r, k) for t, r in zip(truths, rankings, strict=True)])
        )
    return out


def top_k(scores: npt.NDArray[np.floating], k: int) -> IntArray:
    """Indices of the ``k`` highest scores per row, best first; ties go to the lower index."""
    matrix = np.atleast_2d(scores)
    k = min(k, matrix.shape[1])
    out = np.empty((matrix.shape[0], k), dtype=np.int64)
    for start in range(0, matrix.shape[0], 256):
        # Stable sort of the negated scores keeps equal scores in index order.
        chunk = -matrix[start : start + 256]
        out[start : start + 256] = np.argsort(chunk, axis=1, kind="stable")[:, :k]
    return out


# --------------------------------------------------------------------------------------------
# Sparse rows (a minimal CSR: numpy only)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Csr:
    """A sparse matrix in compressed-row form (no duplicate entries within a row)."""

    indptr: IntArray
    indices: IntArray
    data: FloatArray
    n_cols: int

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return int(self.indptr.shape[0] - 1)

    @staticmethod
    def from_triplets(
        rows: IntArray, cols: IntArray, vals: npt.NDArray[np.floating], n_rows: int, n_cols: int
    ) -> Csr:
        """Build from (row, col, value) triplets; duplicates are summed."""
        key = rows.astype(np.int64) * n_cols + cols.astype(np.int64)
        uniq, inverse = np.unique(key, return_inverse=True)
        summed = np.bincount(inverse, weights=vals.astype(np.float64), minlength=uniq.size)
        out_rows = uniq // n_cols
        counts = np.bincount(out_rows, minlength=n_rows)
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return Csr(indptr, (uniq % n_cols).astype(np.int64), summed.astype(np.float32), n_cols)

    def row_ids(self) -> IntArray:
        """The row of each stored entry."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), np.diff(self.indptr))

    def transpose(self) -> Csr:
        """The transposed matrix, in CSR form."""
        return Csr.from_triplets(self.indices, self.row_ids(), self.data, self.n_cols, self.n_rows)

    def select_rows(self, rows: IntArray) -> Csr:
        """The sub-matrix of the given rows, in that order."""
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        indptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        take = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return Csr(indptr, self.indices[take], self.data[take], self.n_cols)

    def to_dense(self) -> FloatArray:
        """The dense matrix (float32)."""
        out = np.zeros((self.n_rows, self.n_cols), dtype=np.float32)
        out[self.row_ids(), self.indices] = self.data
        return out

    def matmul(self, dense: npt.NDArray[np.floating], chunk_entries: int = 4_000_000) -> FloatArray:
        """``self @ dense`` for a dense ``(n_cols, m)`` matrix, in row chunks (float32)."""
        other = np.asarray(dense, dtype=np.float32)
        m = other.shape[1]
        out = np.zeros((self.n_rows, m), dtype=np.float32)
        rows_per_chunk = max(
            1, chunk_entries // max(1, m * max(1, self.indices.size // max(1, self.n_rows)))
        )
        for start in range(0, self.n_rows, rows_per_chunk):
            stop = min(self.n_rows, start + rows_per_chunk)
            lo, hi = int(self.indptr[start]), int(self.indptr[stop])
            if hi == lo:
                continue
            prod = other[self.indices[lo:hi]] * self.data[lo:hi, None]
            local = self.indptr[start : stop + 1] - lo
            nonempty = np.flatnonzero(np.diff(local) > 0)
            sums = np.add.reduceat(prod, local[nonempty], axis=0)
            out[start + nonempty] = sums
        return out

    def row_norms_sq(self) -> npt.NDArray[np.float64]:
        """Squared L2 norm of each row."""
        sq = self.data.astype(np.float64) ** 2
        sums = np.bincount(self.row_ids(), weights=sq, minlength=self.n_rows)
        return np.asarray(sums, dtype=np.float64)


def baskets_to_csr(baskets: Sequence[Basket], n_items: int) -> Csr:
    """One binary row per basket."""
    sizes = np.fromiter((len(b) for b in baskets), dtype=np.int64, count=len(baskets))
    cols = np.fromiter(
        (item for b in baskets for item in b), dtype=np.int64, count=int(sizes.sum())
    )
    rows = np.repeat(np.arange(len(baskets), dtype=np.int64), sizes)
    return Csr.from_triplets(rows, cols, np.ones(cols.size), len(baskets), n_items)


def histories_to_csr(
    histories: Sequence[History], n_items: int, weights: Sequence[npt.NDArray[np.floating]]
) -> Csr:
    """One row per user: the sum over its baskets of ``weight[basket] * onehot(basket)``."""
    flat = [basket for history in histories for basket in history]
    sizes = np.fromiter((len(b) for b in flat), dtype=np.int64, count=len(flat))
    cols = np.fromiter((item for b in flat for item in b), dtype=np.int64, count=int(sizes.sum()))
    n_baskets = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    basket_user = np.repeat(np.arange(len(histories), dtype=np.int64), n_baskets)
    basket_w = (
        np.concatenate([np.asarray(w, dtype=np.float64) for w in weights]) if flat else np.zeros(0)
    )
    if basket_w.size != len(flat):
        raise ValueError("one weight per basket")
    return Csr.from_triplets(
        np.repeat(basket_user, sizes), cols, np.repeat(basket_w, sizes), len(histories), n_items
    )


# --------------------------------------------------------------------------------------------
# G-, P-, GP-TopFreq
# --------------------------------------------------------------------------------------------


def g_topfreq(pop_order: Sequence[int], k: int) -> list[int]:
    """The ``k`` globally most popular items (``pop_order``: items by descending count)."""
    return list(pop_order[:k])


def p_topfreq(history: History, k: int) -> list[int]:
    """The user's own most frequent items; ties by first appearance; may be shorter than k."""
    counts: dict[int, int] = {}
    for basket in history:
        for item in basket:
            counts[item] = counts.get(item, 0) + 1
    # dicts keep insertion (first appearance) order and sorted() is stable.
    ranked = sorted(counts, key=lambda item: -counts[item])
    return ranked[:k]


def gp_topfreq(history: History, pop_order: Sequence[int], k: int) -> list[int]:
    """P-TopFreq filled up to ``k`` with the most popular items the user has not bought."""
    ranked = p_topfreq(history, k)
    seen = set(ranked)
    for item in pop_order:
        if len(ranked) >= k:
            break
        if item not in seen:
            ranked.append(item)
            seen.add(item)
    return ranked


# --------------------------------------------------------------------------------------------
# TIFU-KNN
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TifuParams:
    """TIFU-KNN's hyperparameters; the defaults are the paper code's Ta Feng setting."""

    n_neighbors: int = 300
    within_decay: float = 0.9
    group_decay: float = 0.7
    alpha: float = 0.7
    group_count: int = 7
    similarity: str = "euclidean"  # the paper's code (sklearn's default metric); or "cosine"


def tifu_basket_weights(
    n_baskets: int, within_decay: float, group_decay: float, groups: int
) -> npt.NDArray[np.float64]:
    """Weight of each basket in a TIFU user vector (the vector is ``Σ w_j onehot(b_j)``).

    As the paper's code: a basket ``j`` of ``n`` carries ``within_decay ** (n-1-j)``; baskets
    are cut into ``groups`` consecutive groups (the later groups one basket larger when ``n``
    does not divide), each group is averaged and weighted ``group_decay ** (groups-1-g)``, and
    the sum is divided by the number of groups (``n`` when there are fewer baskets than groups).
    """
    if n_baskets <= 0:
        return np.zeros(0)
    within = within_decay ** np.arange(n_baskets - 1, -1, -1, dtype=np.float64)
    if n_baskets < groups:
        sizes = np.ones(n_baskets, dtype=np.int64)
    else:
        base, extra = divmod(n_baskets, groups)
        sizes = np.array([base] * (groups - extra) + [base + 1] * extra, dtype=np.int64)
    real_groups = sizes.size
    group_w = group_decay ** (groups - 1 - np.arange(real_groups, dtype=np.float64))
    per_basket = np.repeat(group_w / sizes, sizes)
    return within * per_basket / real_groups


def tifu_vectors(histories: Sequence[History], n_items: int, params: TifuParams) -> Csr:
    """TIFU's decayed, grouped user vectors, one row per history."""
    weights = [
        tifu_basket_weights(len(h), params.within_decay, params.group_decay, params.group_count)
        for h in histories
    ]
    return histories_to_csr(histories, n_items, weights)


def knn_indices(query: Csr, reference: Csr, k: int, similarity: str) -> IntArray:
    """The ``k`` nearest reference rows of each query row (Euclidean or cosine)."""
    k = min(k, reference.n_rows)
    ref_sq = reference.row_norms_sq()
    out = np.zeros((query.n_rows, k), dtype=np.int64)
    chunk = 256
    for start in range(0, query.n_rows, chunk):
        rows = np.arange(start, min(query.n_rows, start + chunk), dtype=np.int64)
        q = query.select_rows(rows)
        # (n_ref, chunk) dot products: reference @ q.T, via reference.T's rows = items.
        dots = reference.matmul(q.to_dense().T).astype(np.float64).T
        if similarity == "cosine":
            q_norm = np.sqrt(q.row_norms_sq())[:, None]
            score = -dots / np.maximum(q_norm * np.sqrt(ref_sq)[None, :], 1e-30)
        elif similarity == "euclidean":
            score = q.row_norms_sq()[:, None] - 2.0 * dots + ref_sq[None, :]
        else:
            raise ValueError(f"unknown similarity {similarity!r}")
        part = np.argpartition(score, k - 1, axis=1)[:, :k]
        out[rows] = part
    return out


def tifu_knn_scores(
    query_histories: Sequence[History],
    reference_histories: Sequence[History],
    n_items: int,
    params: TifuParams = TifuParams(),
) -> FloatArray:
    """TIFU-KNN scores ``alpha * own + (1-alpha) * mean of the k nearest reference users``."""
    query = tifu_vectors(query_histories, n_items, params)
    reference = tifu_vectors(reference_histories, n_items, params)
    neighbors = knn_indices(query, reference, params.n_neighbors, params.similarity)
    own = query.to_dense()
    ref_t = reference.transpose()  # items x users
    out = np.empty_like(own)
    chunk = 256
    for start in range(0, query.n_rows, chunk):
        stop = min(query.n_rows, start + chunk)
        mix = np.zeros((reference.n_rows, stop - start), dtype=np.float32)
        cols = np.repeat(np.arange(stop - start), neighbors.shape[1])
        np.add.at(mix, (neighbors[start:stop].ravel(), cols), 1.0 / neighbors.shape[1])
        mean = ref_t.matmul(mix).T
        out[start:stop] = params.alpha * own[start:stop] + (1 - params.alpha) * mean
    return out


# --------------------------------------------------------------------------------------------
# The shipped method: repeat vector + low-rank transition ridge + time-aligned popularity
# --------------------------------------------------------------------------------------------


def decay_weights(n_baskets: int, decay: float) -> npt.NDArray[np.float64]:
    """Weights ``decay ** (n-1-j)`` of the ``n`` baskets, normalised to sum to 1."""
    if n_baskets <= 0:
        return np.zeros(0)
    w: npt.NDArray[np.float64] = decay ** np.arange(n_baskets - 1, -1, -1, dtype=np.float64)
    return np.asarray(w / w.sum(), dtype=np.float64)


def history_vectors(histories: Sequence[History], n_items: int, decay: float) -> Csr:
    """The serving input: each history's decayed average basket (an item-weight vector).

    Item ``i`` weighs ``Σ_j decay**(n-1-j) [i ∈ b_j] / Σ_j decay**(n-1-j)``, in ``[0, 1]``; an
    empty history gives the zero vector (the model then answers its popularity prior).
    """
    return histories_to_csr(histories, n_items, [decay_weights(len(h), decay) for h in histories])


def history_vector(history: History, n_items: int, decay: float) -> FloatArray:
    """One user's serving input, dense ``(n_items,)`` float32."""
    dense = history_vectors([history], n_items, decay).to_dense()
    return np.asarray(dense[0], dtype=np.float32)


@dataclass(frozen=True, slots=True)
class NbrParams:
    """Hyperparameters of the shipped method.

    Generic (not tuned on Ta Feng): ``rank``, ``decay`` (TIFU's within-basket decay),
    ``power_iters``, ``seed``. Set by a rule from the data: ``last_weight`` (None: the
    time-aligned pairs, i.e. the training users' last baskets, get the same total weight as all
    earlier pairs). Chosen on validation users per split: ``ridge`` (relative to the mean
    eigenvalue of the design's Gram matrix) and ``repeat_weight``.
    """

    rank: int = 256
    decay: float = 0.9
    ridge: float = 1.0
    repeat_weight: float = 0.1
    last_weight: float | None = None
    power_iters: int = 4
    seed: int = 0


@dataclass(frozen=True, slots=True)
class NbrModel:
    """A fitted model: ``scores(x) = x @ item_factors @ weights + bias + repeat_weight * x``."""

    item_factors: FloatArray  # (n_items, rank)
    weights: FloatArray  # (rank, n_items)
    bias: FloatArray  # (n_items,)
    repeat_weight: float
    decay: float

    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return int(self.bias.shape[0])

    def scores(self, x: npt.NDArray[np.floating]) -> FloatArray:
        """Scores of every item for dense history vectors ``x`` of shape ``(n, n_items)``."""
        dense = np.asarray(x, dtype=np.float32)
        out = (dense @ self.item_factors) @ self.weights
        out += self.bias
        out += np.float32(self.repeat_weight) * dense
        return out.astype(np.float32)

    def scores_sparse(self, x: Csr) -> FloatArray:
        """``scores`` for sparse history vectors (the same numbers, less memory)."""
        out = x.matmul(self.item_factors) @ self.weights
        out += self.bias
        rows = x.row_ids()
        out[rows, x.indices] += np.float32(self.repeat_weight) * x.data
        return out.astype(np.float32)

    def recommend(self, histories: Sequence[History], k: int) -> IntArray:
        """Top-``k`` items for each history, best first."""
        parts = [
            top_k(
                self.scores_sparse(
                    history_vectors(histories[i : i + 512], self.n_items, self.decay)
                ),
                k,
            )
            for i in range(0, len(histories), 512)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, k), dtype=np.int64)


def randomized_svd(
    matrix: Csr, rank: int, power_iters: int, seed: int
) -> tuple[npt.NDArray[np.float64], FloatArray]:
    """Top ``rank`` singular values and right singular vectors ``(n_cols, rank)`` (Halko et al.)."""
    rng = np.random.default_rng(seed)
    width = min(rank + 20, matrix.n_cols, matrix.n_rows)
    transposed = matrix.transpose()
    omega = rng.standard_normal((matrix.n_cols, width)).astype(np.float32)
    q = np.linalg.qr(matrix.matmul(omega))[0]
    for _ in range(power_iters):
        q = np.linalg.qr(transposed.matmul(q))[0]
        q = np.linalg.qr(matrix.matmul(q))[0]
    small = transposed.matmul(q).T  # q.T @ matrix, (width, n_cols)
    _, sing, vt = np.linalg.svd(small.astype(np.float64), full_matrices=False)
    keep = min(rank, sing.size)
    return sing[:keep], vt[:keep].T.astype(np.float32)


@dataclass(frozen=True, slots=True)
class NbrDesign:
    """The fitted subspace and the ridge's sufficient statistics: solving is then instant."""

    item_factors: FloatArray  # (n_items, rank)
    gram: npt.NDArray[np.float64]  # (rank+1, rank+1), with the intercept column last
    cross: npt.NDArray[np.float64]  # (rank+1, n_items)
    decay: float
    n_pairs: int
    n_aligned: int

    def model(self, ridge: float, repeat_weight: float) -> NbrModel:
        """Solve the ridge (relative strength ``ridge``; the intercept is not penalised)."""
        size = self.gram.shape[0]
        penalty = ridge * np.trace(self.gram[:-1, :-1]) / max(1, size - 1)
        reg = np.eye(size) * penalty
        reg[-1, -1] = 0.0
        solved = np.linalg.solve(self.gram + reg, self.cross)
        return NbrModel(
            item_factors=self.item_factors,
            weights=solved[:-1].astype(np.float32),
            bias=solved[-1].astype(np.float32),
            repeat_weight=repeat_weight,
            decay=self.decay,
        )


def fit_nbr_design(
    histories: Sequence[History],
    last_baskets: Sequence[Basket | None],
    n_items: int,
    params: NbrParams = NbrParams(),
) -> NbrDesign:
    """Fit the subspace and the ridge statistics.

    ``histories[u]`` are user ``u``'s history baskets (fit on all users); ``last_baskets[u]``
    is its held-out last basket when it may be used for training (training users), else None.
    Training pairs: every prefix of a history -> the basket that follows it (weight 1) and, for
    the users with a usable last basket, the whole history -> that basket (``last_weight``:
    these are the pairs aligned in time with the baskets to predict).
    """
    if len(histories) != len(last_baskets):
        raise ValueError("one last basket (or None) per history")
    full: list[History] = [
        [*h, last] if last is not None else list(h)
        for h, last in zip(histories, last_baskets, strict=True)
    ]
    # 1. Subspace: right singular vectors of the log-count user-item matrix.
    counts = histories_to_csr(full, n_items, [np.ones(len(h)) for h in full])
    logged = Csr(counts.indptr, counts.indices, np.log1p(counts.data), n_items)
    _, factors = randomized_svd(logged, params.rank, params.power_iters, params.seed)
    rank = factors.shape[1]
    # 2. Pairs in the subspace: z_t = decayed average of the embeddings of baskets < t.
    flat = [basket for h in full for basket in h]
    basket_rows = baskets_to_csr(flat, n_items)
    embed = basket_rows.matmul(factors)
    z_rows: list[FloatArray] = []
    targets: list[IntArray] = []
    aligned: list[npt.NDArray[np.bool_]] = []
    start = 0
    for h, last in zip(full, last_baskets, strict=True):
        n = len(h)
        if n >= 2:
            t = np.arange(1, n)
            # weight of basket j in the prefix ending before t: decay**(t-1-j), j < t
            expo = (t[:, None] - 1 - np.arange(n - 1)[None, :]).astype(np.float64)
            lower = np.where(expo >= 0, params.decay ** np.maximum(expo, 0), 0.0)
            lower /= lower.sum(axis=1, keepdims=True)
            z_rows.append(lower.astype(np.float32) @ embed[start : start + n - 1])
            targets.append(start + t)
            flags = np.zeros(n - 1, dtype=bool)
            flags[-1] = last is not None
            aligned.append(flags)
        start += n
    del embed
    z = np.hstack(
        [np.concatenate(z_rows), np.ones((sum(r.shape[0] for r in z_rows), 1), np.float32)]
    )
    del z_rows
    is_aligned = np.concatenate(aligned)
    n_aligned = int(is_aligned.sum())
    n_other = int(is_aligned.size - n_aligned)
    last_weight = params.last_weight
    if last_weight is None:
        last_weight = n_other / n_aligned if n_aligned else 1.0
    pair_w = np.where(is_aligned, last_weight, 1.0).astype(np.float32)
    gram = np.zeros((z.shape[1], z.shape[1]))
    for lo in range(0, z.shape[0], 8192):
        part = z[lo : lo + 8192].astype(np.float64)
        gram += (part * pair_w[lo : lo + 8192, None]).T @ part
    z *= pair_w[:, None]
    target_rows = basket_rows.select_rows(np.concatenate(targets))
    cross = target_rows.transpose().matmul(z).T.astype(np.float64)
    del rank
    return NbrDesign(factors, gram, cross, params.decay, int(z.shape[0]), n_aligned)


def fit_nbr(
    histories: Sequence[History],
    last_baskets: Sequence[Basket | None],
    n_items: int,
    params: NbrParams = NbrParams(),
) -> NbrModel:
    """Fit the shipped method with fixed hyperparameters (see ``fit_nbr_design``)."""
    design = fit_nbr_design(histories, last_baskets, n_items, params)
    return design.model(params.ridge, params.repeat_weight)


#: The validation grid of the recipe (the rest of NbrParams is generic or set by rule).
RIDGES = (0.3, 1.0, 3.0)
REPEAT_WEIGHTS = (0.05, 0.1, 0.15, 0.2)
#: What the choice maximises: the mean of these on the validation people's baskets.
TUNED_ON = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
#: At least this many people with a latest basket are set aside to validate on (else none).
MIN_VALIDATION = 10


@dataclass(frozen=True, slots=True)
class Tuned:
    """A model fitted by the recipe, the settings validation chose, and how it scored there
    (empty when there was no one to validate on and the defaults were used)."""

    model: NbrModel
    ridge: float
    repeat_weight: float
    validation: Mapping[str, float]
    people: int
    validated_on: int
    pairs: int
    aligned: int


def validation_people(latest: Sequence[bool]) -> list[bool]:
    """Which people validate: every fifth of those with a latest basket, when that makes at
    least ``MIN_VALIDATION``; none otherwise (a small site keeps them all to learn from)."""
    with_latest = [n for n, has in enumerate(latest) if has]
    chosen = set(with_latest[::5]) if len(with_latest[::5]) >= MIN_VALIDATION else set()
    return [n in chosen for n in range(len(latest))]


def recipe_params(histories: int, n_items: int) -> NbrParams:
    """The recipe's settings for ``histories`` histories over ``n_items`` items: the rank
    grows with the data up to 256 (a small site cannot support a large subspace)."""
    return NbrParams(rank=max(8, min(256, histories // 2, n_items - 1)))


def fit_recipe(
    people: Sequence[tuple[History, Basket | None]],
    n_items: int,
    params: NbrParams = NbrParams(),
    validate: Sequence[bool] | None = None,
) -> Tuned:
    """The one training recipe of the next-basket model, for a site and for the benchmark.

    ``people[u]`` is a history and, when known, the basket that followed it. The validation
    people (``validate``, default `validation_people`) have their latest basket held out:
    ``ridge`` and ``repeat_weight`` are chosen on it from the grid `RIDGES` by
    `REPEAT_WEIGHTS`. Every other person's latest basket is a time-aligned training pair
    (history -> latest). With no one to validate on, ``params``' ridge and repeat weight are
    used.
    """
    chosen = (
        list(validate)
        if validate is not None
        else validation_people([latest is not None for _, latest in people])
    )
    histories = [history for history, _ in people]
    lasts = [None if held else latest for (_, latest), held in zip(people, chosen, strict=True)]
    design = fit_nbr_design(histories, lasts, n_items, params)
    held_out = [(h, latest) for (h, latest), v in zip(people, chosen, strict=True) if v and latest]
    ridge, weight, found = params.ridge, params.repeat_weight, {}
    if held_out:
        x = history_vectors([h for h, _ in held_out], n_items, params.decay)
        truths = [latest for _, latest in held_out]
        best = -1.0
        for r in RIDGES:
            base = design.model(r, 0.0)
            for w in REPEAT_WEIGHTS:
                model = NbrModel(base.item_factors, base.weights, base.bias, w, base.decay)
                scored = evaluate(truths, top_k(model.scores_sparse(x), 20).tolist())
                mean = float(np.mean([scored[m] for m in TUNED_ON]))
                if mean > best:
                    best, ridge, weight, found = mean, r, w, scored
    return Tuned(
        design.model(ridge, weight),
        ridge,
        weight,
        found,
        len(people),
        len(held_out),
        design.n_pairs,
        design.n_aligned,
    )
