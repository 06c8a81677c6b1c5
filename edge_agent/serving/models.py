"""The model registry: releases on disk, their status in SQLite, sessions in onnxruntime.

A release is installed only after it passed every check (`edge_agent.core.releases.check`),
loaded in onnxruntime, matched its vocabulary, and, when a model of that name is already
serving, scored at least as well on recent local data (a shadow evaluation, both models on the
same data). Otherwise it is recorded as refused or held back, with the reason, and the current
model keeps serving. The model it replaces stays on disk for `rollback`.

The model contract: an output named ``scores``, float, shaped ``[batch, items]`` with one
column per vocabulary entry of the manifest, in its order.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.core.releases import Manifest, Refused, check, not_worse, parse
from edge_agent.errors import ModelIntegrityError, StorageError
from edge_agent.store.database import Store
from edge_agent.store.registry import Entry

#: What a shadow evaluation returns: metric name -> value (higher is better).
Shadow = Callable[[ort.InferenceSession, Manifest], Mapping[str, float]]
#: The metrics a candidate must not lose on to replace the serving model.
PROMOTE_ON = ("recall@10", "ndcg@10")
_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def session_options() -> ort.SessionOptions:
    """One intra-op thread and no spinning: the agent shares two small cores with ingest."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def load(model: bytes | Path, manifest: Manifest) -> ort.InferenceSession | Refused:
    """An onnxruntime session of ``model`` whose ``scores`` output matches the manifest's
    vocabulary, or why not."""
    source = str(model) if isinstance(model, Path) else model
    try:
        session = ort.InferenceSession(
            source, sess_options=session_options(), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises several unrelated types for bad files
        return Refused(f"the model is not a loadable ONNX model: {str(exc)[:300]}")
    if "scores" not in {o.name for o in session.get_outputs()}:
        return Refused("the model has no output named 'scores'")
    feed = {}
    for tensor in session.get_inputs():
        kind = _TYPES.get(tensor.type)
        if kind is None:
            return Refused(f"the model's input {tensor.name} has an unsupported type {tensor.type}")
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in tensor.shape]
        # Ones: an integer input may be a count (a top-k), where zero is no answer at all.
        feed[tensor.name] = (np.ones if kind is not np.float32 else np.zeros)(shape, dtype=kind)
    try:
        (scores,) = session.run(["scores"], feed)
    except Exception as exc:  # a graph that cannot run on its own declared inputs
        return Refused(f"the model does not run on its declared inputs: {str(exc)[:300]}")
    if scores.shape[-1] != len(manifest.vocabulary):
        return Refused(
            f"the model scores {scores.shape[-1]} items but the manifest's vocabulary has "
            f"{len(manifest.vocabulary)}: they do not belong together"
        )
    return session


class Sessions:
    """The serving sessions loaded so far, by model name: one copy in memory, shared by the
    registries of several connections (the screens' API reads from one per thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_name: dict[str, tuple[str, Manifest, ort.InferenceSession]] = {}


class Models:
    """The releases of one agent: files under ``folder``, status in the store."""

    def __init__(self, store: Store, folder: Path, sessions: Sessions | None = None) -> None:
        self.store = store
        self.folder = folder
        self._sessions = sessions or Sessions()

    def entries(self) -> list[Entry]:
        """Every version ever offered, newest change first.

        Raises:
            StorageError: the registry cannot be read.
        """
        return self.store.registry.entries()

    def serving(self, name: str) -> tuple[Manifest, ort.InferenceSession] | None:
        """The serving version of ``name`` with its session (loaded once), or None.

        Raises:
            StorageError: the registry cannot be read.
            ModelIntegrityError: the serving files are gone or do not load.
        """
        version = self.store.registry.serving(name)
        if version is None:
            return None
        with self._sessions.lock:
            return self._load(name, version)

    def manifest(self, name: str, version: str) -> Manifest | Refused:
        """The manifest of an installed version, read from its folder (no model loaded).

        Raises:
            ModelIntegrityError: the version's files are gone.
        """
        try:
            return parse((self.folder / name / version / "manifest.json").read_bytes())
        except OSError as exc:
            raise ModelIntegrityError(
                f"the serving model {name} {version} is missing: {exc}"
            ) from exc

    def _load(self, name: str, version: str) -> tuple[Manifest, ort.InferenceSession]:
        cached = self._sessions.by_name.get(name)
        if cached is not None and cached[0] == version:
            return cached[1], cached[2]
        folder = self.folder / name / version
        manifest = self.manifest(name, version)
        session = (
            manifest if isinstance(manifest, Refused) else load(folder / "model.onnx", manifest)
        )
        if isinstance(session, Refused) or isinstance(manifest, Refused):
            reason = session.reason if isinstance(session, Refused) else ""
            raise ModelIntegrityError(
                f"the serving model {name} {version} cannot be loaded: {reason}"
            )
        self._sessions.by_name[name] = (version, manifest, session)
        return manifest, session

    def install(
        self,
        manifest_raw: bytes,
        model: bytes,
        publisher: Ed25519PublicKey | None,
        now_ms: int,
        shadow: Shadow | None = None,
    ) -> Entry:
        """Check, load, shadow-score and (when not worse) promote a release (``publisher``
        None: a model trained here, unsigned).

        Returns the release's entry: ``serving`` when promoted, else ``refused`` or ``held``
        with the reason; the serving model is untouched then.

        Raises:
            StorageError: the registry or the model folder cannot be written.
        """
        manifest = check(manifest_raw, model, publisher)
        if isinstance(manifest, Refused):
            named = parse(manifest_raw)
            name, version = (
                (named.name, named.version)
                if isinstance(named, Manifest)
                else ("unknown", "unknown")
            )
            return self._settle(name, version, "refused", now_ms, manifest.reason)
        session = load(model, manifest)
        if isinstance(session, Refused):
            return self._settle(manifest.name, manifest.version, "refused", now_ms, session.reason)
        measured: Mapping[str, float] = {}
        current = self.serving(manifest.name)
        if shadow is not None:
            measured = shadow(session, manifest)
        if current is not None:
            # Measured here when possible; else the releases' own offline metrics.
            held = (
                not_worse(measured, shadow(current[1], current[0]), PROMOTE_ON)
                if shadow is not None
                else not_worse(manifest.metrics, current[0].metrics, PROMOTE_ON)
            )
            if held is not None:
                return self._settle(
                    manifest.name,
                    manifest.version,
                    "held",
                    now_ms,
                    held.reason,
                    manifest.metrics,
                    measured,
                )
        self._write(manifest, manifest_raw, model)
        return self._promote(manifest, now_ms, measured)

    def _write(self, manifest: Manifest, manifest_raw: bytes, model: bytes) -> None:
        folder = self.folder / manifest.name / manifest.version
        staging = folder.with_name(folder.name + ".partial")
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            for file, data in (("model.onnx", model), ("manifest.json", manifest_raw)):
                with (staging / file).open("wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
            shutil.rmtree(folder, ignore_errors=True)
            # A crash leaves either the old folder or the complete new one, never half of it.
            staging.rename(folder)
        except OSError as exc:
            raise StorageError(f"cannot write the model to {folder}: {exc.strerror}") from exc

    def _promote(self, manifest: Manifest, now_ms: int, measured: Mapping[str, float]) -> Entry:
        self.store.registry.promote(
            manifest.name, manifest.version, now_ms, manifest.metrics, measured
        )
        return self._entry(manifest.name, manifest.version)

    def _settle(
        self,
        name: str,
        version: str,
        status: str,
        now_ms: int,
        reason: str,
        metrics: Mapping[str, float] | None = None,
        shadow: Mapping[str, float] | None = None,
    ) -> Entry:
        if not self.store.registry.settle(name, version, status, now_ms, reason, metrics, shadow):
            return self._entry(name, version, reason)
        return self._entry(name, version)

    def _entry(self, name: str, version: str, reason: str | None = None) -> Entry:
        entry = next(e for e in self.entries() if e.name == name and e.version == version)
        return entry if reason is None else Entry(**{**entry.__dict__, "reason": reason})

    def rollback(self, name: str, now_ms: int) -> Entry | Refused:
        """Serve the previous version of ``name`` again; the one serving now is retired.

        Raises:
            StorageError: the registry cannot be written.
        """
        previous = self.store.registry.rollback(name, now_ms)
        if previous is None:
            return Refused(f"no previous version of {name} to roll back to")
        self._sessions.by_name.pop(name, None)
        return self._entry(name, previous)
