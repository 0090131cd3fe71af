"""Generation on Ray Serve: the front end keeps its queue and UI, replicas of the engine do the work.

``connect(settings)`` starts (or joins) a Ray cluster, deploys ``EngineWorker`` replicas and returns a
``RemoteEngine``: an ``Engine`` whose ``run``/``control_maps``/grid runs go to a replica, so the UI cannot tell
which it holds. Each replica owns one engine (its own pipeline cache) on one GPU, or on the CPU where the cluster
has no GPU. Requests carry their model as Serve's multiplexed model id, so a replica that already holds the model is
preferred. Imported only when ``workers`` is ``ray``: the default app never imports Ray.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from typing import Any

import ray
from ray import serve
from ray.exceptions import RayError
from ray.serve.exceptions import RequestCancelledError

from backend.generation.engine import Engine
from backend.generation.interrupt import Cancelled
from backend.generation.pipeline_call import StepCallback
from backend.grid.plan import GridRequest
from backend.grid.runner import grid_runner
from backend.models.loaders import ModelUnavailable
from backend.schema.errors import ValidationError
from backend.schema.requests import ControlNetRequest, GenerationRequest
from backend.serving.wire import pack, unpack
from backend.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

APP_NAME = "sdstudio"
CANCEL_POLL_S = 0.1  # how often a running job checks its Stop


class WorkerLost(RuntimeError):
    """The replica running a job went away mid-run (crashed, killed, node lost)."""


# Errors cross the boundary as (kind, field, message): ValidationError's constructor takes the field too, which
# pickling an exception would lose.
_ERRORS: dict[str, Any] = {
    "validation": ValidationError,
    "cancelled": Cancelled,
    "unavailable": ModelUnavailable,
    "value": ValueError,
}


def describe_error(err: BaseException) -> tuple[str, str, str]:
    if isinstance(err, ValidationError):
        return "validation", err.field, str(err)
    for kind, cls in _ERRORS.items():
        if isinstance(err, cls):
            return kind, "", str(err)
    return "internal", "", f"{type(err).__name__}: {err}"


def rebuild_error(kind: str, field: str, message: str) -> BaseException:
    if kind == "validation":
        return ValidationError(field, message)
    if kind in _ERRORS:
        return _ERRORS[kind](message)
    return RuntimeError(f"The worker failed: {message}")


class EngineWorker:
    """One replica: an engine of its own, running one job at a time, streaming its steps."""

    def __init__(self, settings: Settings):
        self.engine = Engine(settings)
        self.worker_id = serve.get_replica_context().replica_id.unique_id

    async def load(self, model: str) -> str:
        """Serve's multiplexed loader (wrapped in ``deployment``): loading here marks the replica as holding it."""
        if model in self.engine.registry.names:  # an unknown name is the validator's to refuse, with its message
            await asyncio.to_thread(self._load, model)
        return model

    def _load(self, model: str) -> None:
        with self.engine.run_lock:  # never while a run uses the cache
            self.engine.cache.model(model)

    async def run(self, payload: Any):
        """Yield ("step", event) items, then ("result", result, worker id) or ("error", kind, field, message)."""
        request = unpack(payload)
        try:
            await self.load(serve.get_multiplexed_model_id())
        except Exception as err:  # a model that cannot load: the job's own error, reported like the others
            yield ("error", *describe_error(err))
            return
        runner = grid_runner(self.engine) if isinstance(request, GridRequest) else self.engine
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: tuple[Any, ...]) -> None:
            loop.call_soon_threadsafe(items.put_nowait, item)

        def work() -> None:
            try:
                result = runner.run(request, on_step=lambda event: put(("step", pack(event))), cancel=cancel)
                put(("result", pack(result), self.worker_id))
            except BaseException as err:  # handed to the caller
                put(("error", *describe_error(err)))

        threading.Thread(target=work, name="sd-studio-replica-run", daemon=True).start()
        try:
            while True:
                item = await items.get()
                yield item
                if item[0] != "step":
                    return
        finally:
            # Also reached when the front end cancels the request (Stop): the run ends at its next step.
            cancel.set()

    def control_maps(self, payload: Any) -> Any:
        try:
            return ("result", pack(self.engine.control_maps(unpack(payload))))
        except Exception as err:
            return ("error", *describe_error(err))

    def worker(self) -> str:
        return self.worker_id


def gpus_per_replica(settings: Settings) -> float:
    if settings.ray_gpus_per_replica >= 0:
        return settings.ray_gpus_per_replica
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def deployment(settings: Settings) -> Any:
    """The Serve application: ``EngineWorker`` with the replica count, resources and model cache from settings."""
    gpus = gpus_per_replica(settings)
    options: dict[str, Any] = {
        # One job per replica: the router sends each job to a free replica (the engine runs one at a time anyway).
        "max_ongoing_requests": 1,
        # A CPU replica reserves one core (Ray then runs it with one thread), so replicas never fight over cores.
        "ray_actor_options": {"num_gpus": gpus, "num_cpus": 0 if gpus else 1},
    }
    if settings.ray_max_replicas > settings.ray_replicas:
        options["autoscaling_config"] = {
            "min_replicas": settings.ray_replicas,
            "max_replicas": settings.ray_max_replicas,
            "target_ongoing_requests": 1,
        }
    else:
        options["num_replicas"] = settings.ray_replicas

    class Worker(EngineWorker):
        load = serve.multiplexed(max_num_models_per_replica=settings.max_models)(EngineWorker.load)

    Worker.__name__ = Worker.__qualname__ = "EngineWorker"
    return serve.deployment(**options)(Worker).bind(settings)


def max_replicas(settings: Settings) -> int:
    return max(settings.ray_replicas, settings.ray_max_replicas)


def connect(settings: Settings, name: str = APP_NAME) -> RemoteEngine:
    """Join ``settings.ray_address`` (or start a local Ray), deploy the workers, return the front end's engine.

    ``name`` is the Serve application's: one cluster can hold several (the benchmark compares replica counts).
    """
    if not ray.is_initialized():
        if settings.ray_address:
            # Workers on other machines get this project's code; weights come from each worker's own folders.
            excludes = [".git", ".venv", "outputs", "user", "models/checkpoints", "training"]
            runtime_env = {"working_dir": str(PROJECT_ROOT), "excludes": excludes}
            ray.init(address=settings.ray_address, runtime_env=runtime_env, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")  # no Serve HTTP: the Gradio server is the front door
    handle = serve.run(deployment(settings), name=name, route_prefix=None)
    log.info("Ray Serve: %d engine replica(s) ready in application %r", settings.ray_replicas, name)
    return RemoteEngine(settings, handle)


def shutdown() -> None:
    serve.shutdown()
    ray.shutdown()


class RemoteEngine(Engine):
    """The front end's engine: metadata (models, presets, styles) here, every run on a replica."""

    def __init__(self, settings: Settings, handle: Any):
        super().__init__(settings)  # registry, presets and default model only; no weights are loaded here
        self.handle = handle
        self.concurrency = max_replicas(settings)
        self.runs_grids = True  # grids run on a replica like any request
        self.served: Counter[str] = Counter()  # worker id → finished jobs

    def run(
        self,
        request: GenerationRequest | GridRequest,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Any:
        if isinstance(request, GenerationRequest):
            # Styles live with the front end (users save their own), so they are merged before the request leaves.
            request = self.apply_styles(request)
        model = request.model or self.default_model
        if cancel is not None and cancel.is_set():
            raise Cancelled("generation stopped")
        stream = self.handle.options(stream=True, multiplexed_model_id=model).run.remote(pack(request))
        done = threading.Event()
        if cancel is not None:
            threading.Thread(target=_cancel_when_set, args=(cancel, done, stream), daemon=True).start()
        try:
            for kind, *rest in stream:
                if kind == "step":
                    if on_step is not None:
                        on_step(unpack(rest[0]))
                elif kind == "result":
                    result, worker = rest
                    self.served[worker] += 1
                    return _front_end_result(unpack(result))
                else:
                    raise rebuild_error(*rest)
        except RequestCancelledError:
            raise Cancelled("generation stopped") from None
        except RayError as err:
            log.warning("A Ray worker was lost mid-job: %s", err)
            raise WorkerLost(
                "The worker running this job stopped before it finished (it is being restarted). "
                "Nothing was saved: please generate again."
            ) from None
        finally:
            done.set()
        raise WorkerLost("The worker ended the job without a result. Please generate again.")

    def control_maps(self, request: ControlNetRequest) -> list[Any]:
        kind, *rest = self.handle.control_maps.remote(pack(request)).result()
        if kind == "error":
            raise rebuild_error(*rest)
        return unpack(rest[0])


def _cancel_when_set(cancel: threading.Event, done: threading.Event, stream: Any) -> None:
    while not done.is_set():
        if cancel.wait(CANCEL_POLL_S):
            stream.cancel()  # Serve cancels the replica's generator; its ``finally`` stops the run
            return


def _front_end_result(result: Any) -> Any:
    # Saved files are on the worker's disk, not the front end's: the pictures carry their infotext instead, so a
    # download from the page keeps its parameters.
    for image, text in zip(result.images, result.infotexts, strict=True):
        image.info["parameters"] = text
    result.paths = []
    if hasattr(result, "grid_path"):
        result.grid_path = None
    return result
