"""Next-basket recommendation: metrics, baselines, the shipped model and its ONNX graph.

Tiny synthetic data only (no shared data): the Ta Feng figures are checked by
``python -m bench.nbr_tafeng``.
"""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest

from edge_agent.core import nbr
from edge_agent.core.nbr_onnx import (
    INPUT_HISTORY,
    INPUT_K,
    OUTPUT_ITEMS,
    OUTPUT_SCORES,
    OUTPUT_TOP_SCORES,
    build_graph,
    serialize,
)

# ---------------------------------------------------------------------------------- metrics


def test_recall_counts_hits_in_the_top_k_over_the_whole_truth() -> None:
    assert nbr.recall_at_k([1, 2, 3], [1, 4, 2, 5], 2) == pytest.approx(1 / 3)
    assert nbr.recall_at_k([1, 2, 3], [1, 4, 2, 5], 3) == pytest.approx(2 / 3)
    assert nbr.recall_at_k([1, 2, 3], [], 10) == 0.0
    assert nbr.recall_at_k([], [1, 2], 10) == 0.0


def test_ndcg_divides_by_the_ideal_of_the_whole_truth_basket() -> None:
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # three truth items
    # hits at ranks 1 and 3
    assert nbr.ndcg_at_k([1, 2, 3], [1, 4, 2, 5], 3) == pytest.approx((1 + 0.5) / ideal)
    assert nbr.ndcg_at_k([1, 2, 3], [1, 4, 2, 5], 2) == pytest.approx(1 / ideal)
    assert nbr.ndcg_at_k([1, 2, 3], [3, 2, 1], 10) == pytest.approx(1.0)
    # a truth basket larger than k never reaches 1: the ideal is not cut at k
    truth = list(range(12))
    dcg = sum(1 / math.log2(r + 1) for r in range(1, 11))
    idcg = sum(1 / math.log2(r + 1) for r in range(1, 13))
    assert nbr.ndcg_at_k(truth, list(range(10)), 10) == pytest.approx(dcg / idcg)
    assert nbr.ndcg_at_k([], [1], 10) == 0.0


def test_evaluate_averages_over_users() -> None:
    out = nbr.evaluate([[1], [2, 3]], [[1, 9], [9, 3]], ks=(1, 2))
    assert out["recall@1"] == pytest.approx(0.5)
    assert out["recall@2"] == pytest.approx((1 + 0.5) / 2)
    assert out["ndcg@2"] == pytest.approx((1 + (1 / math.log2(3)) / (1 + 1 / math.log2(3))) / 2)


def test_top_k_breaks_ties_by_the_lower_index() -> None:
    scores = np.array([[0.1, 0.5, 0.5, 0.2], [1.0, 1.0, 1.0, 1.0]], dtype=np.float32)
    assert nbr.top_k(scores, 3).tolist() == [[1, 2, 3], [0, 1, 2]]


# --------------------------------------------------------------------------------- baselines


def test_topfreq_baselines() -> None:
    history = [[3, 1], [2, 1], [3], [5]]
    # 3 and 1 both twice: 3 appeared first; then 2 and 5 once, 2 first
    assert nbr.p_topfreq(history, 10) == [3, 1, 2, 5]
    assert nbr.p_topfreq(history, 2) == [3, 1]
    assert nbr.g_topfreq([7, 3, 8, 9], 2) == [7, 3]
    assert nbr.gp_topfreq(history, [7, 3, 8, 9, 10], 6) == [3, 1, 2, 5, 7, 8]
    assert nbr.gp_topfreq(history, [7], 2) == [3, 1]


def _reference_tifu_vector(
    history: list[list[int]], n_items: int, within: float, group_decay: float, groups: int
) -> np.ndarray:
    """TIFU's user vector transcribed loop by loop from the published algorithm."""
    vecs = []
    n = len(history)
    for j, basket in enumerate(history):
        v = np.zeros(n_items)
        v[basket] = within ** (n - 1 - j)
        vecs.append(v)
    if n < groups:
        grouped, real = vecs, n
    else:
        base, extra = divmod(n, groups)
        sizes = [base] * (groups - extra) + [base + 1] * extra
        grouped, pos = [], 0
        for size in sizes:
            grouped.append(np.sum(vecs[pos : pos + size], axis=0) / size)
            pos += size
        real = groups
    out = np.zeros(n_items)
    for g in range(real):
        out += grouped[g] * group_decay ** (groups - 1 - g)
    return out / real


@pytest.mark.parametrize("n_baskets", [1, 2, 6, 7, 8, 13, 20])
def test_tifu_vectors_match_the_reference_algorithm(n_baskets: int) -> None:
    rng = np.random.default_rng(n_baskets)
    history = [sorted(set(rng.integers(0, 12, 4).tolist())) for _ in range(n_baskets)]
    params = nbr.TifuParams(within_decay=0.9, group_decay=0.7, group_count=7)
    got = nbr.tifu_vectors([history], 12, params).to_dense()[0]
    want = _reference_tifu_vector(history, 12, 0.9, 0.7, 7)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_tifu_knn_mixes_own_vector_and_neighbours() -> None:
    query = [[[0, 1]], [[2]]]
    reference = [[[0, 1]], [[0, 3]], [[2, 4]]]
    own_only = nbr.tifu_knn_scores(query, reference, 5, nbr.TifuParams(n_neighbors=1, alpha=1.0))
    np.testing.assert_allclose(own_only, nbr.tifu_vectors(query, 5, nbr.TifuParams()).to_dense())
    params = nbr.TifuParams(n_neighbors=1, alpha=0.0, group_count=1)
    neighbours = nbr.tifu_knn_scores(query, reference, 5, params)
    # nearest of [0,1] is itself; nearest of [2] is [2,4] (Euclidean)
    np.testing.assert_allclose(neighbours[0], [1, 1, 0, 0, 0])
    np.testing.assert_allclose(neighbours[1], [0, 0, 1, 0, 1])


# ----------------------------------------------------------------------------- sparse helpers


def test_csr_operations_match_dense() -> None:
    rng = np.random.default_rng(0)
    dense = (rng.random((7, 5)) < 0.4) * rng.random((7, 5))
    rows, cols = np.nonzero(dense)
    csr = nbr.Csr.from_triplets(rows, cols, dense[rows, cols], 7, 5)
    np.testing.assert_allclose(csr.to_dense(), dense, rtol=1e-6)
    np.testing.assert_allclose(csr.transpose().to_dense(), dense.T, rtol=1e-6)
    other = rng.random((5, 3))
    np.testing.assert_allclose(csr.matmul(other, chunk_entries=4), dense @ other, rtol=1e-5)
    pick = np.array([3, 0, 6])
    np.testing.assert_allclose(csr.select_rows(pick).to_dense(), dense[pick], rtol=1e-6)
    np.testing.assert_allclose(csr.row_norms_sq(), (dense**2).sum(1), rtol=1e-5)


def test_history_vector_is_the_decayed_average_basket() -> None:
    x = nbr.history_vector([[0], [1, 2], [1]], 4, 0.5)
    weights = np.array([0.25, 0.5, 1.0]) / 1.75
    np.testing.assert_allclose(x, [weights[0], weights[1] + weights[2], weights[1], 0], rtol=1e-6)
    np.testing.assert_array_equal(nbr.history_vector([], 4, 0.5), np.zeros(4))


def test_randomized_svd_finds_the_top_singular_subspace() -> None:
    rng = np.random.default_rng(1)
    low = rng.random((40, 3)) @ rng.random((3, 25))
    rows, cols = np.nonzero(low)
    csr = nbr.Csr.from_triplets(rows, cols, low[rows, cols], 40, 25)
    sing, factors = nbr.randomized_svd(csr, 3, power_iters=2, seed=0)
    np.testing.assert_allclose(sing, np.linalg.svd(low, compute_uv=False)[:3], rtol=1e-3)
    # the rows of the matrix lie in the span of the factors
    projected = low @ factors @ factors.T
    np.testing.assert_allclose(projected, low, atol=1e-3)


# ---------------------------------------------------------------------- shipped model and ONNX


def _synthetic(seed: int = 0) -> tuple[list[list[list[int]]], list[list[int] | None]]:
    """60 shoppers of 30 items in 3 tastes, 3-8 baskets each; half have a usable last basket."""
    rng = np.random.default_rng(seed)
    histories: list[list[list[int]]] = []
    lasts: list[list[int] | None] = []
    for user in range(60):
        taste = np.arange(10) + 10 * (user % 3)
        baskets = [
            sorted(set(rng.choice(taste, size=3).tolist()) | {int(rng.integers(0, 30))})
            for _ in range(int(rng.integers(3, 9)))
        ]
        histories.append(baskets[:-1])
        lasts.append(baskets[-1] if user % 2 == 0 else None)
    return histories, lasts


def _model() -> nbr.NbrModel:
    histories, lasts = _synthetic()
    params = nbr.NbrParams(rank=6, power_iters=2, repeat_weight=0.2)
    return nbr.fit_nbr(histories, lasts, 30, params)


def test_shipped_model_learns_the_tastes() -> None:
    model = _model()
    assert model.item_factors.shape == (30, 6)
    assert model.weights.shape == (6, 30)
    # a new shopper who bought items of taste 1 gets taste-1 items first
    top = model.recommend([[[10, 11], [12, 13]]], 5)[0]
    assert all(10 <= item < 20 for item in top)
    # sparse and dense scoring agree
    x = nbr.history_vectors([[[10, 11], [12]], [[0]]], 30, model.decay)
    np.testing.assert_allclose(model.scores_sparse(x), model.scores(x.to_dense()), atol=1e-5)


def test_aligned_pairs_get_the_rule_weight() -> None:
    histories, lasts = _synthetic()
    design = nbr.fit_nbr_design(histories, lasts, 30, nbr.NbrParams(rank=4, power_iters=1))
    assert design.n_aligned == sum(1 for last in lasts if last is not None)
    assert design.n_pairs == sum(len(h) - 1 for h in histories) + design.n_aligned


def _session(data: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_onnx_graph_scores_equal_the_numpy_scores(seed: int) -> None:
    model = _model()
    sess = _session(serialize(model))
    rng = np.random.default_rng(seed)
    x = (rng.random((5, 30)) * (rng.random((5, 30)) < 0.3)).astype(np.float32)
    k = np.array([7], dtype=np.int64)
    items, scores, everything = sess.run(
        [OUTPUT_ITEMS, OUTPUT_TOP_SCORES, OUTPUT_SCORES], {INPUT_HISTORY: x, INPUT_K: k}
    )
    want = model.scores(x)
    assert items.shape == (5, 7)
    np.testing.assert_allclose(scores, np.take_along_axis(want, items, axis=1), atol=1e-5)
    np.testing.assert_allclose(scores, -np.sort(-want, axis=1)[:, :7], atol=1e-5)
    np.testing.assert_array_equal(items, nbr.top_k(want, 7))
    np.testing.assert_allclose(everything, want, atol=1e-5)


def test_onnx_graph_carries_the_history_decay() -> None:
    model = _model()
    proto = build_graph(model)
    props = {p.key: p.value for p in proto.metadata_props}
    assert float(props["history_decay"]) == model.decay
    assert int(props["n_items"]) == 30
    sess = _session(proto.SerializeToString())
    x = nbr.history_vector([[3, 4], [5]], 30, model.decay)[None, :]
    (items,) = sess.run([OUTPUT_ITEMS], {INPUT_HISTORY: x, INPUT_K: np.array([4], dtype=np.int64)})
    assert items[0].tolist() == model.recommend([[[3, 4], [5]]], 4)[0].tolist()
