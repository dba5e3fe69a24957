"""`TensorRTModel`: a release's ONNX model served as a TensorRT engine on the GPU.

load(): the release's files (the FP16 copy when that precision is configured) -> the FP32
signature and reference outputs from ONNX Runtime on the CPU -> the engine from the cache in
S3, else built and stored -> the load check (the engine's outputs on the reference sample
within the precision's tolerance) -> warm-up. Any failure is a ModelLoadError: the model
reports UNAVAILABLE with the reason (a failed rollout), the container stays up.
Importing this module imports nothing from NVIDIA; `engine.py` does, when a model loads.
"""

from __future__ import annotations

import logging
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferstack.exceptions import BadRequestError, InferenceError, ModelLoadError
from inferstack.models.base import Model, Tensors
from inferstack.models.onnx import OnnxModel
from inferstack.models.tensorrt.cache import EngineCache, EngineKey
from inferstack.models.tensorrt.device import GpuIdentity, probe_gpu
from inferstack.models.tensorrt.profiles import (
    Profiles,
    load_check_inputs,
    max_shapes,
    profiles_from_signature,
    shape_problem,
    synthetic_inputs,
)
from inferstack.models.tolerance import max_abs_error, mismatch
from inferstack.release_pointer import ReleaseFiles, fetch_release_files, is_release_uri
from inferstack.sources import S3ModelCache, file_sha256, parse_s3_uri, resolve_model_file

if TYPE_CHECKING:
    from inferstack.models.tensorrt.engine import Engine
    from inferstack.protocol.types import InferInput

logger = logging.getLogger(__name__)

OPTIMIZATION_LEVEL = 3  # TensorRT's default builder optimization level
MAX_WORKSPACE = 4 << 30


class TensorRTModel(Model):
    platform = "tensorrt_plan"

    def __init__(
        self,
        name: str,
        uri: str,
        version: str | None = None,
        *,
        precision: str = "fp32",
        cache_dir: str | None = None,
        max_batch_size: int = 1,
        unavailable: str | None = None,
    ) -> None:
        super().__init__(name, version)
        self.uri = uri
        self.precision = precision
        self.cache_dir = cache_dir
        self.max_batch_size = max_batch_size
        # Set when this host cannot run TensorRT at all (backend forced): load() says why.
        self.unavailable = unavailable
        self.build_info: dict[str, Any] = {}
        self._profiles: Profiles | None = None
        self._engine: Engine | None = None

    def concurrency(self) -> int:
        return 1  # one execution context and one stream

    def load(self) -> None:
        if self.unavailable:
            raise ModelLoadError(self.unavailable)
        gpu = probe_gpu()
        if gpu.identity is None:
            raise ModelLoadError(gpu.reason)
        files = self._files()
        if files.note:
            logger.warning("model %s: %s", self.name, files.note)
        cpu = OnnxModel(self.name, files.fp32_path, warmup=False)
        cpu.load()
        self.inputs, self.outputs = cpu.inputs, cpu.outputs
        profiles = profiles_from_signature(
            self.inputs, self.max_batch_size, files.settings.get("profiles")
        )
        sample, checked_on = load_check_inputs(self.inputs, profiles, files.reference)
        expected = cpu.predict(sample)
        cpu.close()
        engine = self._engine_for(files, profiles, gpu.identity)
        try:  # a failed check or warm-up frees the new engine's GPU memory at once
            actual = engine.run(sample, [spec.name for spec in self.outputs])
            problem = mismatch(expected, actual, files.precision)
            if problem:
                raise ModelLoadError(f"TensorRT's outputs differ from ONNX Runtime's: {problem}")
            engine.run(synthetic_inputs(self.inputs, profiles), engine.outputs)  # warm-up
        except BaseException:
            engine.close()
            raise
        self.build_info["precision"] = files.precision
        self.build_info["load_check"] = {
            "on": checked_on,
            "max_abs_error": max_abs_error(expected, actual),
        }
        # A reload (a new release) swaps engines; the old one is freed once its run ends.
        previous, self._engine, self._profiles = self._engine, engine, profiles
        self.batchable, self.max_rows = profiles.batchable, profiles.max_rows
        self.unbatchable_reason = cpu.unbatchable_reason
        if not profiles.batchable and self.unbatchable_reason is None:
            self.unbatchable_reason = f"its profile takes at most {profiles.max_rows} row"
        if previous is not None:
            previous.close()

    # -- serving -------------------------------------------------------------------------
    def validate(self, inputs: list[InferInput], output_names: list[str] | None) -> Tensors:
        given = super().validate(inputs, output_names)
        if self._profiles is not None:
            for name, array in given.items():
                problem = shape_problem(self._profiles, name, array.shape)
                if problem:
                    raise BadRequestError(problem)
        return given

    def predict(self, inputs: Tensors, output_names: list[str] | None = None) -> Tensors:
        engine = self._engine
        if engine is None:
            raise ModelLoadError(f"model '{self.name}' is not loaded")
        wanted = output_names or [spec.name for spec in self.outputs]
        try:
            return engine.run(inputs, wanted)
        except InferenceError as exc:
            if self._engine is not None and self._engine is not engine:
                return self._engine.run(inputs, wanted)  # a reload swapped engines meanwhile
            # A CUDA fault leaves the context unusable: not ready, so the platform replaces
            # the instance or task (its /ping fails).
            self.ready, self.error = False, exc.message
            logger.error("model %s failed on the GPU: %s", self.name, exc.message)
            raise

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        super().close()

    # -- loading -------------------------------------------------------------------------
    def _files(self) -> ReleaseFiles:
        if is_release_uri(self.uri):
            files = fetch_release_files(self.uri, variant=self.precision, cache_dir=self.cache_dir)
            self.version = files.release
            return files
        if self.precision != "fp32":
            raise ModelLoadError(
                f"precision {self.precision} needs a release (its {self.precision} copy is made "
                "when the model is released); a model file serves fp32"
            )
        path = resolve_model_file(self.uri, cache_dir=self.cache_dir)
        return ReleaseFiles(path, self.version or "1", path, None, {})

    def _engine_for(self, files: ReleaseFiles, profiles: Profiles, gpu: GpuIdentity) -> Engine:
        from inferstack.models.tensorrt import cuda, engine

        key = EngineKey(
            model_sha256=file_sha256(files.path),
            trt_version=engine.trt_version(),
            gpu_name=gpu.name,
            compute_capability=gpu.compute_capability,
            machine=platform.machine(),
            precision=files.precision,
            profiles=profiles.as_json(),
            workspace_bytes=min(MAX_WORKSPACE, gpu.memory_bytes // 2),
            builder_optimization_level=OPTIMIZATION_LEVEL,
        )
        cache = self._cache()
        shapes = max_shapes(self.inputs, profiles)
        entry = cache.get(key)
        if entry is not None:
            try:
                loaded = engine.Engine(entry.plan, shapes)
            except ModelLoadError as exc:
                logger.warning("model %s: cached engine unusable (%s): rebuilding", self.name, exc)
            else:
                self.build_info = {**entry.info, "source": "cache"}
                logger.info("model %s: TensorRT engine %s from the cache", self.name, key.digest())
                return loaded
        logger.info(
            "building TensorRT engine for %s (no cache entry %s; typically minutes)",
            self.name,
            key.digest()[:12],
        )
        timing = cache.get_timing(key)
        began = time.monotonic()
        built = engine.build(
            files.path,
            profiles.shapes,
            workspace_bytes=key.workspace_bytes,
            optimization_level=OPTIMIZATION_LEVEL,
            timing_cache=timing,
        )
        info = {
            "release": files.release,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "build_s": round(time.monotonic() - began, 3),
            "trt_version": key.trt_version,
            "gpu": {"name": gpu.name, "cc": gpu.compute_capability, "driver": gpu.driver},
            "timing_cache_reused": timing is not None,
            "builder_warnings": built.warnings,
            "free_memory_bytes": cuda.free_memory(),
        }
        self.build_info = {**info, "source": "built"}
        try:
            cache.put_timing(key, built.timing)
            cache.put(key, built.plan, info, replace=entry.etag if entry else None)
        except Exception:  # the engine still serves; the next start builds again
            logger.warning("model %s: could not store its engine", self.name, exc_info=True)
        return engine.Engine(built.plan, shapes)

    def _cache(self) -> EngineCache:
        local = Path(self.cache_dir or S3ModelCache().root) / "engines"
        if self.uri.startswith("s3://"):
            return EngineCache(
                local, S3ModelCache(self.cache_dir).client, parse_s3_uri(self.uri).bucket, self.name
            )
        return EngineCache(local, None, None, self.name)
