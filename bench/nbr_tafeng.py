"""Benchmark: next-basket recommendation on Ta Feng, the Reality-Check protocol.

Run: ``python -m bench.nbr_tafeng [--data /work/shared/data/tafeng]``. For each keyset (user
split) and their mean: fit on the history baskets (all but the last) of all users; the train
users' last baskets may be used for training and the keyset's val users' last baskets for
choosing hyperparameters; the test users' last baskets are only ever scored. Each test user's
last basket is predicted from their history; Recall@10/20 and NDCG@10/20 (ideal DCG over the
WHOLE truth basket, as in the paper's code).

Rows: G-/P-/GP-TopFreq and TIFU-KNN (checked against the data README's figures, deltas
printed) and the shipped method, fitted in a child process (its training time and peak RSS
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
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.measure import peak_rss_mb
from edge_agent.core import nbr
from edge_agent.core.nbr_onnx import INPUT_HISTORY, INPUT_K, OUTPUT_ITEMS, serialize
from edge_agent.core.releases import Manifest, release
from edge_agent.serving.models import session_options

DEFAULT_DATA = Path("/work/shared/data/tafeng")
METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
README = {
    "G-TopFreq": (0.0834, 0.0866, 0.1115, 0.0963),
    "P-TopFreq": (0.1072, 0.0959, 0.1403, 0.1103),
    "GP-TopFreq": (0.1215, 0.1019, 0.1703, 0.1215),
    "TIFU-KNN": (0.1254, 0.1018, 0.1829, 0.1237),
}
SHIPPED = "shipped (ONNX)"
TOP = 20
#: Validation grid of the shipped method (the rest of NbrParams is fixed or set by rule).
RIDGES = (0.3, 1.0, 3.0)
REPEAT_WEIGHTS = (0.05, 0.1, 0.15, 0.2)
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


def fit_shipped(folder: str, index: int, onnx_path: str) -> dict[str, object]:
    """Child process: fit and tune the shipped method for one keyset, write its ONNX file.

    Uses the history baskets of all users, the train users' last baskets for training and
    the val users' last baskets for the choice of ``ridge`` and ``repeat_weight``.
    """
    started = time.perf_counter()
    data = Data.load(Path(folder))
    split = keyset(Path(folder), index)
    users = list(data.baskets)
    train = set(split["train"])
    histories = [data.baskets[u][:-1] for u in users]
    lasts = [data.baskets[u][-1] if u in train else None for u in users]
    params = nbr.NbrParams()
    design = nbr.fit_nbr_design(histories, lasts, data.n_items, params)
    fitted = time.perf_counter()
    val_hist = [data.baskets[u][:-1] for u in split["val"]]
    val_truth = [data.baskets[u][-1] for u in split["val"]]
    val_x = nbr.history_vectors(val_hist, data.n_items, params.decay)
    grid: list[tuple[float, float, float]] = []
    for ridge in RIDGES:
        base = design.model(ridge, 0.0)
        for weight in REPEAT_WEIGHTS:
            model = nbr.NbrModel(base.item_factors, base.weights, base.bias, weight, base.decay)
            ranked = nbr.top_k(model.scores_sparse(val_x), TOP).tolist()
            found = nbr.evaluate(val_truth, ranked)
            grid.append((statistics.fmean(found[m] for m in METRICS), ridge, weight))
    _, ridge, weight = max(grid)
    model = design.model(ridge, weight)
    Path(onnx_path).write_bytes(serialize(model))
    trained = time.perf_counter()
    # The numpy model's top-20 for the test users, to check the ONNX graph against.
    test_hist = [data.baskets[u][:-1] for u in split["test"]]
    numpy_top = model.recommend(test_hist, TOP)
    np.save(onnx_path + ".numpy_top.npy", numpy_top)
    return {
        "seconds": trained - started,
        "fit_seconds": fitted - started,
        "peak_mb": peak_rss_mb(),
        "ridge": ridge,
        "repeat_weight": weight,
        "decay": params.decay,
        "rank": int(model.item_factors.shape[1]),
        "pairs": design.n_pairs,
        "aligned": design.n_aligned,
    }


def session(path: str) -> ort.InferenceSession:
    """An onnxruntime session as the agent runs it (one thread, spinning off)."""
    return ort.InferenceSession(
        path, sess_options=session_options(), providers=["CPUExecutionProvider"]
    )


def fit_default(folder: str, onnx_path: str, ridge: float, weight: float) -> None:
    """Child process: the shipped default, fit on every user's baskets (the last ones too)."""
    data = Data.load(Path(folder))
    users = list(data.baskets)
    histories = [data.baskets[u][:-1] for u in users]
    lasts: list[nbr.Basket | None] = [data.baskets[u][-1] for u in users]
    params = nbr.NbrParams(ridge=ridge, repeat_weight=weight)
    Path(onnx_path).write_bytes(serialize(nbr.fit_nbr(histories, lasts, data.n_items, params)))


def export_default(
    folder: Path, out: Path, key_file: Path, means: Sequence[float], chosen: list[dict[str, object]]
) -> Path:
    """Write the shipped default release (ONNX + signed manifest) under ``out``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SystemExit(f"{key_file} is not an Ed25519 private key")
    # The hyperparameters validation chose most often across the keysets.
    ridge = statistics.mode(float(str(c["ridge"])) for c in chosen)
    weight = statistics.mode(float(str(c["repeat_weight"])) for c in chosen)
    data = Data.load(folder)
    target = out / "next-basket" / "tafeng-2001"
    target.mkdir(parents=True, exist_ok=True)
    model_path = target / "model.onnx"
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.apply(fit_default, (str(folder), str(model_path), ridge, weight))
    model = model_path.read_bytes()
    unsigned = Manifest(
        "next-basket",
        "tafeng-2001",
        datetime.now(UTC).isoformat(timespec="seconds"),
        tuple(f"tafeng:{i}" for i in range(data.n_items)),
        "",
        0,
        inputs={"history": {"shape": [1, data.n_items], "decay": nbr.NbrParams().decay}, "k": [1]},
        outputs={"scores": [1, data.n_items], "items": [1, "k"], "top_scores": [1, "k"]},
        training={
            "data": "Ta Feng grocery, Nov 2000 - Feb 2001, Reality-Check preprocessing",
            "users": len(data.baskets),
            "baskets": sum(len(h) for h in data.baskets.values()),
            "ridge": ridge,
            "repeat_weight": weight,
            "metrics_from": "the keyset protocol of bench.nbr_tafeng (mean of the keysets); "
            "this file is fit on every user",
        },
        metrics=dict(zip(METRICS, means, strict=True)),
    )
    manifest = release(unsigned, model, key)
    (target / "manifest.json").write_text(json.dumps(manifest.document(), indent=1) + "\n")
    return target


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
    parser.add_argument("--export", type=Path, help="also write the shipped default release here")
    parser.add_argument("--key", type=Path, help="the publisher's Ed25519 key to sign it with")
    args = parser.parse_args(argv)
    if args.export and not args.key:
        parser.error("--export needs --key")
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
                info = pool.apply(fit_shipped, (str(folder), index, path))
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
                "  shipped - TIFU-KNN, paired over test users (95% CI): "
                + "  ".join(
                    f"{m:+.4f}±{h:.4f}" for m, h in zip(diff.mean(axis=0), half, strict=True)
                )
            )
            print(
                f"  shipped: ridge={info['ridge']} repeat_weight={info['repeat_weight']} "
                f"(chosen on {len(split['val'])} val users), rank={info['rank']}, "
                f"decay={info['decay']}, pairs={info['pairs']} ({info['aligned']} aligned); "
                f"ONNX top-20 == numpy top-20 for {agree:.2%} of test users"
            )
            print(
                f"  shipped training {info['seconds']:.1f} s "
                f"(load + fit {info['fit_seconds']:.1f} s, then validation grid and ONNX export), "
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
    print(row("shipped/TIFU", ratios, "   (ratio)"))
    print(
        f"shipped: training {statistics.fmean(float(str(e['seconds'])) for e in extras):.1f} s "
        f"per keyset, peak RSS {max(float(str(e['peak_mb'])) for e in extras):.0f} MB, ONNX "
        f"{max(float(str(e['onnx_mb'])) for e in extras):.1f} MB, latency p50 "
        f"{statistics.fmean(float(str(e['p50_ms'])) for e in extras):.3f} ms / p99 "
        f"{max(float(str(e['p99_ms'])) for e in extras):.3f} ms (worst keyset); "
        f"bench process peak RSS {peak_rss_mb():.0f} MB"
    )
    if args.export:
        target = export_default(folder, args.export, args.key, means[SHIPPED], extras)
        print(f"shipped default release written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
