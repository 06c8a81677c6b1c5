"""Benchmark: next-basket recommendation on Ta Feng, the Reality-Check protocol.

Run: ``python -m bench.nbr_tafeng [--data /work/shared/data/tafeng]``. For each keyset (user
split) and their mean: fit on the history baskets (all but the last) of all users; the last
baskets of the train and val users may be used for training and for choosing
hyperparameters; the test users' last baskets are only ever scored. Each test user's
last basket is predicted from their history; Recall@10/20 and NDCG@10/20 (ideal DCG over the
WHOLE truth basket, as in the paper's code).

Rows: G-/P-/GP-TopFreq and TIFU-KNN (checked against the data README's figures, deltas
printed) and the site recipe: the very code a site's training job runs
(``edge_agent.core.nbr.fit_recipe``: the site picks its own validation people among the train
and val users, one BLAS thread), fitted in a child process (its training time and peak RSS
alone), exported to ONNX and scored through onnxruntime (1 thread, no spinning), with its
ratio to TIFU-KNN, the ONNX file size and the latency of one request.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.measure import peak_rss_mb
from edge_agent.core import nbr
from edge_agent.core.nbr_onnx import INPUT_HISTORY, INPUT_K, OUTPUT_ITEMS, serialize
from edge_agent.serving.models import session_options
from edge_agent.serving.training import bounded_threads

DEFAULT_DATA = Path("/work/shared/data/tafeng")
METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
README = {
    "G-TopFreq": (0.0834, 0.0866, 0.1115, 0.0963),
    "P-TopFreq": (0.1072, 0.0959, 0.1403, 0.1103),
    "GP-TopFreq": (0.1215, 0.1019, 0.1703, 0.1215),
    "TIFU-KNN": (0.1254, 0.1018, 0.1829, 0.1237),
}
SHIPPED = "site recipe"
TOP = 20
LATENCY_REQUESTS = 2000


@dataclass(frozen=True)
class Data:
    """The merged baskets, the popularity order and the keysets."""

    baskets: dict[str, list[list[int]]]
    pop_order: list[int]
    n_items: int

    @staticmethod
    def load(folder: Path) -> Data:
        """Read ``tafeng_merged.json`` and ``tafeng_pop.csv``."""
        baskets = json.loads((folder / "tafeng_merged.json").read_text())
        lines = (folder / "tafeng_pop.csv").read_text().split()
        pop_order = [int(line.split(",")[0]) for line in lines[1:]]
        n_items = 1 + max(item for h in baskets.values() for b in h for item in b)
        return Data(baskets, pop_order, n_items)


def keyset(folder: Path, index: int) -> dict[str, list[str]]:
    """The ``train``/``val``/``test`` user ids of keyset ``index``."""
    raw = json.loads((folder / f"keyset_{index}.json").read_text())
    return {part: [str(u) for u in raw[part]] for part in ("train", "val", "test")}


def fit_site_recipe(folder: str, index: int, onnx_path: str) -> dict[str, object]:
    """Child process: the site's recipe for one keyset (``fit_recipe`` with the site's own
    choice of validation people, on one BLAS thread), its ONNX file written.

    The keyset's train and val users are the site's people with a latest basket; its test
    users' last baskets are the future, so the site knows only their histories.
    """
    started = time.perf_counter()
    data = Data.load(Path(folder))
    split = keyset(Path(folder), index)
    known = set(split["train"]) | set(split["val"])
    users = list(data.baskets)
    people = [(data.baskets[u][:-1], data.baskets[u][-1] if u in known else None) for u in users]
    params = nbr.recipe_params(len(people), data.n_items)
    with bounded_threads():
        tuned = nbr.fit_recipe(people, data.n_items, params)
    Path(onnx_path).write_bytes(serialize(tuned.model))
    trained = time.perf_counter()
    # The numpy model's top-20 for the test users, to check the ONNX graph against.
    test_hist = [data.baskets[u][:-1] for u in split["test"]]
    numpy_top = tuned.model.recommend(test_hist, TOP)
    np.save(onnx_path + ".numpy_top.npy", numpy_top)
    return {
        "seconds": trained - started,
        "peak_mb": peak_rss_mb(),
        "ridge": tuned.ridge,
        "repeat_weight": tuned.repeat_weight,
        "validated_on": tuned.validated_on,
        "decay": params.decay,
        "rank": int(tuned.model.item_factors.shape[1]),
        "pairs": tuned.pairs,
        "aligned": tuned.aligned,
    }


def session(path: str) -> ort.InferenceSession:
    """An onnxruntime session as the agent runs it (one thread, spinning off)."""
    return ort.InferenceSession(
        path, sess_options=session_options(), providers=["CPUExecutionProvider"]
    )


def onnx_recommend(
    sess: ort.InferenceSession, histories: Sequence[nbr.History], n_items: int, decay: float
) -> np.ndarray:
    """Top-20 items of each history through the ONNX graph (batches of 256)."""
    out = []
    k = np.array([TOP], dtype=np.int64)
    for start in range(0, len(histories), 256):
        x = nbr.history_vectors(histories[start : start + 256], n_items, decay).to_dense()
        (items,) = sess.run([OUTPUT_ITEMS], {INPUT_HISTORY: x, INPUT_K: k})
        out.append(items)
    return np.concatenate(out)


def latency_ms(
    sess: ort.InferenceSession, history: nbr.History, n_items: int, decay: float
) -> tuple[float, float]:
    """p50 and p99 of one request (one user's vector in, top-20 out), milliseconds."""
    x = nbr.history_vector(history, n_items, decay)[None, :]
    feeds = {INPUT_HISTORY: x, INPUT_K: np.array([TOP], dtype=np.int64)}
    for _ in range(50):
        sess.run([OUTPUT_ITEMS], feeds)
    times = []
    for _ in range(LATENCY_REQUESTS):
        begin = time.perf_counter()
        sess.run([OUTPUT_ITEMS], feeds)
        times.append((time.perf_counter() - begin) * 1000)
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99) - 1]


def per_user(truths: Sequence[nbr.Basket], ranked: Sequence[Sequence[int]]) -> np.ndarray:
    """Per-user metric values, shape ``(users, 4)`` in ``METRICS`` order."""
    return np.array(
        [
            [
                nbr.recall_at_k(t, r, 10),
                nbr.ndcg_at_k(t, r, 10),
                nbr.recall_at_k(t, r, 20),
                nbr.ndcg_at_k(t, r, 20),
            ]
            for t, r in zip(truths, ranked, strict=True)
        ]
    )


def row(name: str, values: Sequence[float], extra: str = "") -> str:
    """One table line."""
    return f"  {name:<15}" + "".join(f"{v:>9.4f}" for v in values) + extra


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--keysets", default="0,1,2", help="comma-separated keyset indices")
    args = parser.parse_args(argv)
    folder: Path = args.data
    indices = [int(i) for i in args.keysets.split(",")]
    data = Data.load(folder)
    header = f"  {'method':<15}" + "".join(f"{m:>9}" for m in ("R@10", "N@10", "R@20", "N@20"))
    results: dict[str, list[tuple[float, ...]]] = {}
    extras: list[dict[str, object]] = []
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        for index in indices:
            split = keyset(folder, index)
            test_hist = [data.baskets[u][:-1] for u in split["test"]]
            truths = [data.baskets[u][-1] for u in split["test"]]
            rankings: dict[str, list[list[int]]] = {
                "G-TopFreq": [nbr.g_topfreq(data.pop_order, TOP)] * len(test_hist),
                "P-TopFreq": [nbr.p_topfreq(h, TOP) for h in test_hist],
                "GP-TopFreq": [nbr.gp_topfreq(h, data.pop_order, TOP) for h in test_hist],
            }
            began = time.perf_counter()
            reference = [data.baskets[u][:-1] for u in split["train"]]
            tifu = nbr.tifu_knn_scores(test_hist, reference, data.n_items)
            rankings["TIFU-KNN"] = nbr.top_k(tifu, TOP).tolist()
            tifu_seconds = time.perf_counter() - began
            del tifu
            path = os.path.join(tmp, f"nbr_{index}.onnx")
            with ctx.Pool(1) as pool:
                info = pool.apply(fit_site_recipe, (str(folder), index, path))
            sess = session(path)
            decay = float(sess.get_modelmeta().custom_metadata_map["history_decay"])
            onnx_top = onnx_recommend(sess, test_hist, data.n_items, decay)
            numpy_top = np.load(path + ".numpy_top.npy")
            agree = float(np.mean(np.all(onnx_top == numpy_top, axis=1)))
            rankings[SHIPPED] = onnx_top.tolist()
            p50, p99 = latency_ms(sess, test_hist[0], data.n_items, decay)
            info |= {
                "onnx_mb": os.path.getsize(path) / 1e6,
                "p50_ms": p50,
                "p99_ms": p99,
                "same_top20_as_numpy": agree,
                "tifu_seconds": tifu_seconds,
            }
            extras.append(info)
            print(f"keyset {index}: {len(truths)} test users")
            print(header)
            for name, ranked in rankings.items():
                found = nbr.evaluate(truths, ranked)
                values = tuple(found[m] for m in METRICS)
                results.setdefault(name, []).append(values)
                print(row(name, values))
            diff = per_user(truths, rankings[SHIPPED]) - per_user(truths, rankings["TIFU-KNN"])
            half = 1.96 * diff.std(axis=0, ddof=1) / np.sqrt(diff.shape[0])
            print(
                "  site recipe - TIFU-KNN, paired over test users (95% CI): "
                + "  ".join(
                    f"{m:+.4f}±{h:.4f}" for m, h in zip(diff.mean(axis=0), half, strict=True)
                )
            )
            print(
                f"  site recipe: ridge={info['ridge']} repeat_weight={info['repeat_weight']} "
                f"(chosen on the site's {info['validated_on']} validation people), "
                f"rank={info['rank']}, "
                f"decay={info['decay']}, pairs={info['pairs']} ({info['aligned']} aligned); "
                f"ONNX top-20 == numpy top-20 for {agree:.2%} of test users"
            )
            print(
                f"  site recipe training {info['seconds']:.1f} s "
                "(load, fit, validation grid and ONNX export; BLAS on 1 thread), "
                f"peak RSS {info['peak_mb']:.0f} MB (child process); ONNX "
                f"{info['onnx_mb']:.1f} MB; onnxruntime 1 thread, one request: "
                f"p50 {p50:.3f} ms, p99 {p99:.3f} ms; TIFU-KNN {tifu_seconds:.1f} s",
                flush=True,
            )
    n = len(indices)
    print(
        f"\nmean of {n} keyset(s) ({','.join(map(str, indices))}); NDCG ideal over the WHOLE truth"
    )
    print(header + "   delta to the data README (R@10 N@10 R@20 N@20)")
    means = {
        name: tuple(float(np.mean(col)) for col in zip(*vals, strict=True))
        for name, vals in results.items()
    }
    for name, values in means.items():
        extra = ""
        if name in README:
            deltas = [v - r for v, r in zip(values, README[name], strict=True)]
            ok = all(abs(d) <= 0.0005 for d in deltas)
            verdict = ("  ok (within 0.0005)" if ok else "  MISMATCH") if n == 3 else ""
            extra = "   " + " ".join(f"{d:+.4f}" for d in deltas) + verdict
        print(row(name, values, extra))
    ratios = [s / t for s, t in zip(means[SHIPPED], means["TIFU-KNN"], strict=True)]
    print(row("recipe/TIFU", ratios, "   (ratio)"))
    print(
        f"site recipe: training {statistics.fmean(float(str(e['seconds'])) for e in extras):.1f} s "
        f"per keyset, peak RSS {max(float(str(e['peak_mb'])) for e in extras):.0f} MB, ONNX "
        f"{max(float(str(e['onnx_mb'])) for e in extras):.1f} MB, latency p50 "
        f"{statistics.fmean(float(str(e['p50_ms'])) for e in extras):.3f} ms / p99 "
        f"{max(float(str(e['p99_ms'])) for e in extras):.3f} ms (worst keyset); "
        f"bench process peak RSS {peak_rss_mb():.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
