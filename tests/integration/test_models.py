"""The model registry on disk with real ONNX files in onnxruntime: promotion after a shadow
evaluation, every refusal with its reason while the old model keeps serving, and rollback."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from onnx import TensorProto, helper, numpy_helper

from edge_agent.collector.app import create_app
from edge_agent.collector.store.central import CentralStore
from edge_agent.core.releases import Manifest, Refused, release
from edge_agent.mqtt.broker import Mosquitto
from edge_agent.serving.models import Models
from edge_agent.serving.training import SHIPPED, install_shipped
from edge_agent.store.database import Store
from tests.collector_helpers import ADMIN_TOKEN, Server, collector_cli
from tests.conftest import AgentProcess
from tests.helpers import SITE, cli

pytestmark = pytest.mark.integration

PUBLISHER = Ed25519PrivateKey.generate()
VOCABULARY = ("p1", "p2", "p3")
# Recent local data: a history vector and the item bought next.
HISTORIES = np.eye(3, dtype=np.float32)
NEXT = np.array([1, 2, 0])


def _model(weights: np.ndarray) -> bytes:
    """scores = history @ weights: an item-to-item model over the vocabulary."""
    n = weights.shape[1]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["history", "weights"], ["scores"])],
        "item-to-item",
        [helper.make_tensor_value_info("history", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(weights.astype(np.float32), "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


GOOD = _model(np.roll(np.eye(3), 1, axis=1) + 0.1)  # predicts the right next item
BETTER = _model(np.roll(np.eye(3), 1, axis=1))
WORSE = _model(np.eye(3))  # predicts the same item again: wrong on this data


def _shadow(session: ort.InferenceSession, manifest: Manifest) -> Mapping[str, float]:
    hits = [
        int(np.argmax(session.run(["scores"], {"history": h[None, :]})[0]) == truth)
        for h, truth in zip(HISTORIES, NEXT, strict=True)
    ]
    return {"recall@10": float(np.mean(hits)), "ndcg@10": float(np.mean(hits))}


def _release(
    version: str, model: bytes, vocabulary: tuple[str, ...] = VOCABULARY
) -> tuple[bytes, bytes]:
    manifest = release(
        Manifest("next-basket", version, "2026-11-26T15:00:00Z", vocabulary, "", 0),
        model,
        PUBLISHER,
    )
    return orjson.dumps(manifest.document()), model


@pytest.fixture
def models(tmp_path: Path) -> Models:
    return Models(Store.open(tmp_path / "edge-agent.db"), tmp_path / "models")


def test_the_lifecycle_promote_refuse_hold_and_roll_back(models: Models) -> None:
    key = PUBLISHER.public_key()
    first = models.install(*_release("1", GOOD), key, 1, _shadow)
    assert (first.status, first.shadow["recall@10"]) == ("serving", 1.0)

    manifest, model = _release("2", BETTER)
    refusals = {
        "sha256": (manifest, model[:-1] + b"\x01"),
        "truncated": (manifest, model[:-5]),
        "signature": (
            orjson.dumps({**orjson.loads(manifest), "created": "2030-01-01T00:00:00Z"}),
            model,
        ),
        "not a loadable ONNX model": _release("2", BETTER[: len(BETTER) // 2]),
        "vocabulary has 4": _release("2", BETTER, (*VOCABULARY, "p4")),
    }
    for reason, (bad_manifest, bad_model) in refusals.items():
        entry = models.install(bad_manifest, bad_model, key, 2, _shadow)
        assert entry.status == "refused", reason
        assert reason in entry.reason
        assert models.serving("next-basket") is not None
        assert models.serving("next-basket")[0].version == "1"  # type: ignore[index]

    worse = models.install(*_release("3", WORSE), key, 3, _shadow)
    assert worse.status == "held"
    assert "worse than the current model on recall@10" in worse.reason
    assert models.serving("next-basket")[0].version == "1"  # type: ignore[index]

    promoted = models.install(manifest, model, key, 4, _shadow)
    assert promoted.status == "serving"
    serving = models.serving("next-basket")
    assert serving is not None
    assert serving[0].version == "2"
    status = {(e.version, e.status) for e in models.entries()}
    assert {("1", "previous"), ("2", "serving"), ("3", "held")} <= status

    back = models.rollback("next-basket", 5)
    assert not isinstance(back, Refused)
    assert back.version == "1"
    assert models.serving("next-basket")[0].version == "1"  # type: ignore[index]
    assert isinstance(models.rollback("next-basket", 6), Refused)  # nothing older kept


def test_a_signature_by_another_key_is_refused(models: Models) -> None:
    other = Ed25519PrivateKey.generate().public_key()
    entry = models.install(*_release("1", GOOD), other, 1, _shadow)
    assert entry.status == "refused"
    assert "pinned publisher key" in entry.reason
    assert models.serving("next-basket") is None


def test_sessions_run_on_one_thread_without_spinning(models: Models) -> None:
    models.install(*_release("1", GOOD), PUBLISHER.public_key(), 1, _shadow)
    serving = models.serving("next-basket")
    assert serving is not None
    options = serving[1].get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_releases_published_at_central_are_pulled_checked_and_rolled_back(
    tmp_path: Path,
) -> None:
    """keygen and publish at central, pull and rollback at the site, over real HTTP."""
    central_db = str(tmp_path / "central.db")
    key_file = tmp_path / "publisher.pem"
    made = collector_cli("keygen", "--out", str(key_file))
    assert made.returncode == 0, made.stderr
    public_key = made.stdout.strip()
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    vocabulary = tmp_path / "vocabulary.json"
    vocabulary.write_text(orjson.dumps(list(VOCABULARY)).decode())

    other_key = tmp_path / "impostor.pem"
    assert collector_cli("keygen", "--out", str(other_key)).returncode == 0
    longer = tmp_path / "vocabulary-4.json"
    longer.write_text(orjson.dumps([*VOCABULARY, "p4"]).decode())

    def publish(
        version: str, model: bytes, recall: float, key: Path = key_file, words: Path = vocabulary
    ) -> None:
        path = tmp_path / f"model-{version}.onnx"
        path.write_bytes(model)
        done = collector_cli(
            "publish", "next-basket", version, "--db", central_db, "--model", str(path),
            "--vocabulary", str(words), "--key", str(key),
            "--metrics", orjson.dumps({"recall@10": recall, "ndcg@10": recall}).decode(),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

    store = CentralStore.open(central_db)
    token = "site-token-" + "m" * 32
    store.add_site(SITE, SITE, hashlib.sha256(token.encode()).hexdigest())
    config = tmp_path / "agent.toml"
    try:
        with Server(create_app(store, ADMIN_TOKEN)) as server:
            config.write_text(
                f'[site]\nid = "{SITE}"\ndata_dir = "{tmp_path / "data"}"\n'
                f'[sync]\nurl = "{server.url}"\ntoken = "{token}"\n'
                f'[models]\npublisher_key = "{public_key}"\n'
            )

            def pull() -> subprocess.CompletedProcess[str]:
                return cli("--config", str(config), "models", "pull", "next-basket")

            assert "no release of next-basket" in pull().stderr
            publish("1", GOOD, 0.14)
            first = pull()
            assert (first.returncode, first.stdout.split()[-1]) == (0, "serving"), first.stderr
            assert "already serving" in pull().stdout

            publish("2", WORSE, 0.10)
            held = pull()
            assert held.returncode == 1
            assert "held" in held.stdout
            assert "worse than the current model" in held.stdout

            publish("3", BETTER, 0.15)
            with sqlite3.connect(central_db) as db:  # damaged at central, or on the way
                db.execute("UPDATE model_releases SET model = ? WHERE version = '3'", [WORSE])
            tampered = pull()
            assert tampered.returncode == 1
            assert "refused" in tampered.stdout
            assert "the file was altered" in tampered.stdout or "truncated" in tampered.stdout

            for version, model, key, words, reason in (
                ("3a", BETTER, other_key, vocabulary, "pinned publisher key"),
                ("3b", BETTER, key_file, longer, "vocabulary has 4"),
                ("3c", BETTER[: len(BETTER) // 2], key_file, vocabulary, "not a loadable ONNX"),
            ):
                publish(version, model, 0.15, key, words)
                refused = pull()
                assert refused.returncode == 1
                assert "refused" in refused.stdout
                assert reason in refused.stdout

            publish("4", BETTER, 0.15)
            assert pull().returncode == 0
            listing = cli("--config", str(config), "models", "list", "--json")
            status = {e["version"]: e["status"] for e in orjson.loads(listing.stdout)}
            assert status == {
                "1": "previous",
                "2": "held",
                "3": "refused",
                "3a": "refused",
                "3b": "refused",
                "3c": "refused",
                "4": "serving",
            }
            back = cli("--config", str(config), "models", "rollback", "next-basket")
            assert back.returncode == 0, back.stderr
            assert "next-basket 1 is serving again" in back.stdout
    finally:
        store.close()


def test_the_shipped_default_verifies_loads_and_a_damaged_copy_is_refused(
    tmp_path: Path, models: Models
) -> None:
    (installed,) = install_shipped(models, 1)
    assert (installed.name, installed.version, installed.status) == (
        "next-basket",
        "online-retail-2010",
        "serving",
    )
    assert installed.metrics["recall@10"] >= 0.1  # what bench.shipped_default measured
    assert install_shipped(models, 2) == []  # judged once
    copy = tmp_path / "shipped"
    shutil.copytree(SHIPPED, copy)
    model = copy / "next-basket" / "online-retail-2010" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    fresh = Models(Store.open(tmp_path / "other.db"), tmp_path / "other-models")
    (refused,) = install_shipped(fresh, 1, copy)
    assert refused.status == "refused"
    assert "sha256" in refused.reason


def test_the_agent_installs_models_from_a_child_process_and_never_loads_onnxruntime(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess]
) -> None:
    # Its memory is that of ingest: model work (checking, training) runs in a child process.
    agent = agent_factory(broker.port, train_on_start=True)
    agent.start()
    agent.wait_log("model_job_done")
    with Store.open(agent.db, readonly=True) as store:
        serving = [e.name for e in Models(store, agent.folder / "data" / "models").entries()]
    assert "next-basket" in serving
    assert agent.process is not None
    maps = Path(f"/proc/{agent.process.pid}/maps").read_text()
    assert "onnxruntime" not in maps
