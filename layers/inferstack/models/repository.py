"""The models a host serves, keyed by name (KServe's ModelRepository)."""

from __future__ import annotations

from threading import Lock, Thread
from time import monotonic
from typing import TYPE_CHECKING, Any

from inferstack.exceptions import ModelNotFoundError, ModelNotReadyError
from inferstack.models.base import Model
from inferstack.names import model_name_problem

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

# How often a host with no release for a model looks at its live pointer again (seconds).
RELEASE_RECHECK_S = 10.0


class ModelRepository:
    def __init__(
        self, models: Iterable[Model] = (), *, recheck_in_background: bool = False
    ) -> None:
        self._models: dict[str, Model] = {}
        self.recheck_in_background = recheck_in_background
        self._recheck_lock = Lock()
        for model in models:
            self.add(model)

    def add(self, model: Model) -> None:
        # Hosts refuse such names at start with the setting named; this holds for any caller.
        problem = model_name_problem(model.name)
        if problem:
            raise ValueError(problem)
        if model.name in self._models:
            raise ValueError(f"two models are named {model.name!r}")
        self._models[model.name] = model

    def load_all(self) -> None:
        """Load every model; one that fails is left not-ready with its reason."""
        models = list(self._models.values())
        if len(models) == 1:
            models[0].load_safely()
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(4, len(models))) as pool:
            list(pool.map(Model.load_safely, models))

    def get(self, name: str, version: str | None = None) -> Model:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFoundError(f"model '{name}' is not served here")
        if version is not None and version != model.version:
            raise ModelNotFoundError(
                f"model '{name}' has no version '{version}'; it serves version '{model.version}'"
            )
        return model

    def get_ready(self, name: str, version: str | None = None) -> Model:
        model = self.get(name, version)
        if model.awaiting_release:
            self._look_for_release(model)
        if not model.ready:
            if model.awaiting_release:
                raise ModelNotReadyError(model.error or f"model '{name}' has no release yet")
            reason = f": {model.error}" if model.error else " (still loading)"
            raise ModelNotReadyError(f"model '{name}' is not ready{reason}")
        return model

    def _look_for_release(self, model: Model) -> None:
        """A model deployed before its first release loads it once it exists, with no other
        step: its pointer is looked at again, at most every RELEASE_RECHECK_S per host."""
        with self._recheck_lock:
            if (
                not model.awaiting_release
                or monotonic() - model.release_checked < RELEASE_RECHECK_S
            ):
                return
            model.release_checked = monotonic()
        if self.recheck_in_background:  # the server: never load on the event loop
            Thread(target=model.load_safely, name=f"release-{model.name}", daemon=True).start()
        else:  # Lambda: this request waits, as a cold start would
            model.load_safely()

    def up(self) -> bool:
        """Every model serves, or has no release to serve yet (the platforms' health check)."""
        return bool(self._models) and all(m.ready or m.awaiting_release for m in self)

    def ready(self) -> bool:
        return bool(self._models) and all(model.ready for model in self._models.values())

    def index(self) -> list[dict[str, Any]]:
        """Entries of the model-repository extension's index."""
        entries = []
        for model in self._models.values():
            entry: dict[str, Any] = {"name": model.name, "state": model.state}
            if model.version is not None:
                entry["version"] = model.version
            if model.error:
                entry["reason"] = model.error
            entries.append(entry)
        return entries

    def __iter__(self) -> Iterator[Model]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def close(self) -> None:
        for model in self._models.values():
            model.close()
