"""The Ray side of a conversion: workers, plan/lock/resume, scheduling, and the entry points.

    from jobs.convert.driver import run_conversion
    summary = run_conversion("corpus.jsonl.zst", "runs/store", codec="mini", num_parts=8)

Ray: the session already initialised in this process, else RAY_ADDRESS's cluster, else a
private local Ray on 127.0.0.1 that is shut down at the end.

A worker is an encoder actor holding the frozen codec (CPU or GPU) and, when the encoder has
a GPU (or with `--render-actors`), a render actor beside it: the encoder actor then pulls page
images from its render actor's streaming generator through Ray's object store (rendering runs
ahead of encoding, with bounded read-ahead), so the GPU does not wait for pages. A CPU
encoder renders its parts itself by default (`--render-in-encoder`): on the worker's core the
two would only take turns, and one process without the hand-off gives ~25% more pages/s with
the mini codec and scales better. Both actors only wrap `jobs.convert.pipeline`.

Resume: a part is done when its store part verifies and its record exists. A re-run skips
done parts and redoes the others from scratch, so an interrupted run ends with the same
store (same checksums) as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Optional

import ray

from data.errors import BadInput, BadStore, UserError, existing_path
from jobs.convert import report
from jobs.convert.config import ConvertConfig, PartResult
from jobs.convert.pipeline import (STATE_DIR, PartFailed, atomic_write_text, codec_info,
                                   convert_part_stream, keep_freed_memory, page_config,
                                   part_record_path, render_part_stream, store_meta,
                                   warm_rendering)
from jobs.errors import raise_remote, remote_cause

PLAN_VERSION = 3  # 3: the plan has `oversized`; 2: corpus shards are files or slices of files
READ_AHEAD_CHUNKS = 4  # rendered chunks a part may have waiting for its encoder


# ------------------------------------------------------------------------------ workers


class RenderWorker:
    """A long-lived CPU process that renders parts (a Ray actor made by the driver).

    An actor rather than a task per part: a new Ray worker process costs seconds (Python,
    fonts, tokenizer), which on a small machine dwarfs rendering a part.
    """

    def __init__(self) -> None:
        keep_freed_memory()

    def ready(self) -> bool:
        warm_rendering()
        return True

    def render_part(self, *args: Any) -> Iterator[tuple]:
        yield from render_part_stream(*args)


class CodecWorker:
    """Holds one frozen codec and converts whole parts (a Ray actor made by the driver)."""

    def __init__(self, cfg: ConvertConfig, torch_threads: int) -> None:
        import torch

        from codec import load_codec

        keep_freed_memory()
        torch.set_num_threads(max(1, torch_threads))
        # An error here is kept for `info` to raise: Ray reports an actor's failed start only
        # as text, while a method's error reaches the driver with its type (a wrong codec
        # spec or path is then one line for the user, not a remote traceback).
        self.codec, self.error = None, None
        try:
            self.codec = load_codec(cfg.codec, mode=cfg.codec_mode, path=cfg.codec_path,
                                    options=cfg.codec_options,
                                    trust_remote_code=cfg.trust_remote_code)
        except Exception as err:  # noqa: BLE001 - raised again by every method
            self.error = err
            return
        if cfg.render_in_encoder:  # this actor renders its own parts
            warm_rendering()

    def loaded_codec(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.codec

    def info(self) -> dict:
        return codec_info(self.loaded_codec())

    def convert_part(self, cfg: ConvertConfig, part: int, render_config: Any, meta: dict,
                     renderer: Any) -> Iterator[tuple]:
        """`pipeline.convert_part_stream`, fed by `renderer` (a render actor) or, when it is
        None, rendering here."""
        messages = None
        if renderer is not None:
            stream = renderer.render_part.options(
                num_returns="streaming", _generator_backpressure_num_objects=READ_AHEAD_CHUNKS,
            ).remote(cfg.corpus, part, cfg.num_parts, cfg.read_kwargs(), render_config,
                     cfg.batch_size)
            messages = map(ray.get, stream)
        yield from convert_part_stream(cfg, part, self.loaded_codec(), render_config, meta,
                                       messages)


# ------------------------------------------------------------------------------ Ray session


# The environment of the private local Ray. Ray 2.60 turns token authentication on for a new
# local cluster when RAY_AUTH_MODE is unset (writing ~/.ray/auth_token if missing, and
# warning "Token authentication is enabled for this Ray cluster" on every run); a cluster on
# loopback that lives as long as the job has no one to keep out. Set in this process before
# ray.init, it is inherited by the raylet and so by every worker: driver and workers agree.
# A value the user set (RAY_AUTH_MODE=token) is kept.
LOCAL_RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


@contextlib.contextmanager
def _ray_session(cfg: ConvertConfig) -> Iterator[None]:
    """Ray for the job: the caller's session, RAY_ADDRESS's cluster, or a private local one
    (stopped, and this process's environment restored, at the end)."""
    if ray.is_initialized():  # a caller (a test, a notebook) set Ray up already
        yield
        return
    saved = {key: os.environ.get(key) for key in LOCAL_RAY_ENV}
    try:
        if os.environ.get("RAY_ADDRESS"):
            ray.init()  # the cluster's own settings apply
        else:
            for key, value in LOCAL_RAY_ENV.items():
                os.environ.setdefault(key, value)
            # Logical CPUs: room for every encoder plus its renderer, else the stage that
            # gets no CPU waits forever. The OS shares the physical cores between them.
            need = cfg.num_actors * (cfg.cpus_per_actor + cfg.render_actor_cpus)
            num_cpus = cfg.num_cpus or max(os.cpu_count() or 1, int(-(-need // 1)))
            # address="local": a private instance, never a cluster someone else started on
            # this host; loopback only, and no dashboard to serve.
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     _node_ip_address="127.0.0.1")
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_resources(cfg: ConvertConfig) -> bool:
    """Raise if not even one worker fits the cluster; True when all of them fit."""
    res = ray.cluster_resources()
    cpus, gpus = res.get("CPU", 0.0), res.get("GPU", 0.0)
    need = cfg.cpus_per_actor + cfg.render_actor_cpus
    if cpus + 1e-9 < need or gpus + 1e-9 < cfg.gpus_per_actor:
        raise BadInput(
            f"the cluster has {cpus:g} CPU / {gpus:g} GPU, but one encoder actor and its render "
            f"task need {need:g} CPU / {cfg.gpus_per_actor:g} GPU "
            "(lower --cpus-per-actor, --render-cpus or --gpus-per-actor)")
    if cpus + 1e-9 < cfg.num_actors * need or gpus + 1e-9 < cfg.num_actors * cfg.gpus_per_actor:
        print(f"[convert] note: the cluster holds fewer than {cfg.num_actors} workers now; the "
              "others join when resources appear (e.g. from the autoscaler)", flush=True)
        return False
    return True


# ------------------------------------------------------------------------------ plan, lock, resume


def _plan(cfg: ConvertConfig, meta: Optional[dict]) -> dict:
    """What fixes the output bytes; a resumed run must agree with the stored plan.

    The corpus's file names and sizes are part of it: they decide which part reads which
    documents, so a resumed run on a corpus that changed in between is refused.
    """
    import hashlib

    from data.corpus import corpus_files

    listing = json.dumps(corpus_files(cfg.corpus)).encode("utf-8")
    return {"version": PLAN_VERSION, "corpus": cfg.corpus,
            "corpus_files": hashlib.sha256(listing).hexdigest(), "num_parts": cfg.num_parts,
            "text_field": cfg.text_field, "id_field": cfg.id_field, "max_chars": cfg.max_chars,
            "oversized": cfg.oversized, "batch_size": cfg.batch_size, "store": meta}


def _check_or_write_plan(out: Path, plan: dict) -> None:
    """Refuse to mix settings in one store; `plan["store"]` None: check the rest only."""
    path = out / STATE_DIR / "plan.json"
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if plan["store"] is None:
            old["store"] = None
        if old != plan:
            diff = {k: (old.get(k), plan.get(k)) for k in plan if old.get(k) != plan.get(k)}
            raise BadStore(f"{out} holds a conversion with other settings (stored, given): "
                           f"{diff}", hint="choose another --out, or --overwrite to start over")
        return
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    if plan["store"] is not None:
        atomic_write_text(path, json.dumps(plan, indent=1, sort_keys=True))


def _done_part(out: Path, part: int) -> Optional[PartResult]:
    """The part's record if the part is complete and verifies, else None."""
    from data.store import StoreError, part_status, verify_part

    path = part_record_path(out, part)
    if not path.exists() or part_status(out, part) != "complete":
        return None
    try:
        record = PartResult(**json.loads(path.read_text(encoding="utf-8")))
        verify_part(out, part)
    except (ValueError, TypeError, OSError, StoreError) as err:
        print(f"[convert] part {part} fails verification ({err}); redoing it", flush=True)
        return None
    return record


def _lock(out: Path) -> Any:
    """An exclusive lock on `out`: two jobs must not write (or clean up) the same store."""
    import fcntl

    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    fh = (out / STATE_DIR / "lock").open("w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise BadStore(f"another conversion is writing {out}",
                       hint="wait for it, or choose another --out") from None
    return fh


def _clear(out: Path) -> None:
    """--overwrite: delete everything in `out` but the lock we hold."""
    for child in out.iterdir():
        if child.name == STATE_DIR:
            for item in child.iterdir():
                if item.name != "lock":
                    shutil.rmtree(item) if item.is_dir() else item.unlink()
        elif child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


# ------------------------------------------------------------------------------ entry points


def run_conversion(corpus: str | Path, out: str | Path, codec: str = "mini",
                   **options: Any) -> dict:
    """Convert `corpus` into the token store at `out`; returns the summary (= summary.json).

    `options` are ConvertConfig's other fields (num_parts, num_actors, batch_size, ...).
    Raises if a part still fails after its retries (the finished parts stay; a re-run does
    the rest).
    """
    return convert(ConvertConfig(corpus=str(corpus), out=str(out), codec=codec, **options))


def convert(cfg: ConvertConfig) -> dict:
    """`run_conversion` for a ready ConvertConfig (what the command line builds)."""
    if os.environ.get("RAY_ADDRESS") and not (Path(cfg.corpus).is_absolute()
                                              and Path(cfg.out).is_absolute()):
        # Under `ray job submit` the working dir is a temporary copy: relative paths land there.
        print("[convert] warning: relative --corpus/--out on a cluster resolve inside the job's "
              f"working dir ({os.getcwd()}); pass absolute paths", flush=True)
    # Absolute: the plan records the corpus, and actors may run in another directory.
    cfg = dataclasses.replace(cfg, corpus=str(Path(cfg.corpus).resolve()),
                              out=str(Path(cfg.out).resolve()))
    if min(cfg.num_parts, cfg.num_actors, cfg.batch_size) < 1:
        raise BadInput("--num-parts, --num-actors and --batch-size must be at least 1")
    existing_path(cfg.corpus, "corpus path", hint="check --corpus")
    out_dir = Path(cfg.out)
    t_start = time.perf_counter()
    lock = _lock(out_dir)  # held until we return; the kernel drops it if we are killed
    try:
        if cfg.overwrite:
            _clear(out_dir)
        _check_or_write_plan(out_dir, _plan(cfg, None))  # fail fast: before Ray and the codec
        with _ray_session(cfg):
            return _drive(cfg, out_dir, t_start)
    finally:
        lock.close()


def _drive(cfg: ConvertConfig, out: Path, t_start: float) -> dict:
    from data.store import (MANIFEST_FILE, StoreMeta, consolidate, create_store,
                            remove_incomplete)

    fits_all = _check_resources(cfg)
    if cfg.render_in_encoder and cfg.gpus_per_actor > 0:
        print("[convert] note: --render-in-encoder with GPUs leaves each GPU idle while its "
              "actor renders; separate render actors keep it fed", flush=True)
    codec_cls = ray.remote(CodecWorker).options(
        num_cpus=cfg.cpus_per_actor, num_gpus=cfg.gpus_per_actor, max_concurrency=1)
    render_cls = ray.remote(RenderWorker).options(num_cpus=cfg.render_actor_cpus,
                                                  max_concurrency=1)
    threads = max(1, int(cfg.cpus_per_actor))  # torch threads follow the CPUs asked for
    started: list = []  # every actor, replacements too, to kill at the end

    def new_codec() -> Any:
        started.append(codec_cls.remote(cfg, threads))
        return started[-1]

    def new_renderer() -> Any:
        if cfg.render_in_encoder:
            return None
        started.append(render_cls.remote())
        return started[-1]

    # Worker i = (encoder actor, its render actor or None).
    workers = [(new_codec(), new_renderer()) for _ in range(cfg.num_actors)]
    # Readiness of each worker: the codec is loaded and the renderer's imports are warm.
    starting = {w: [w[0].info.remote()] + ([w[1].ready.remote()] if w[1] else [])
                for w in workers}
    try:
        # Wait for every worker when all fit (start-up then stays out of pages/s), else for
        # the first; the others are put to work as they come up.
        for w in workers if fits_all else workers[:1]:
            try:
                info = ray.get(starting.pop(w))[0]
            except Exception as err:  # noqa: BLE001 - e.g. a codec that cannot load
                raise_remote(err)
        print(f"[convert] Ray ready and {cfg.num_actors - len(starting)} worker(s) loaded in "
              f"{time.perf_counter() - t_start:.1f}s", flush=True)
        render_config = page_config(cfg, info)
        meta = store_meta(cfg, info, render_config)
        plan = _plan(cfg, meta)
        _check_or_write_plan(out, plan)
        create_store(out, StoreMeta.from_json(meta))
        removed = remove_incomplete(out)  # leftovers of a killed run (no writer runs yet)
        # Readers open a store through its manifest: none until this run has finished.
        (out / MANIFEST_FILE).unlink(missing_ok=True)

        progress = report.Progress(cfg.num_parts, cfg.progress_every)
        todo = []
        for part in range(cfg.num_parts):
            record = _done_part(out, part)
            if record is None:
                todo.append(part)
            else:
                progress.finish(record, resumed=True)
        print(f"[convert] {cfg.num_parts} parts: {len(progress.resumed)} done before, "
              f"{len(todo)} to convert ({len(removed)} partial part(s) removed) | codec "
              f"{info['name']}/{info['mode']} n={info['n']} D={info['D']} on {info['device']} | "
              f"{cfg.num_actors} actor(s) x {cfg.cpus_per_actor:g} CPU "
              f"{cfg.gpus_per_actor:g} GPU, batch {cfg.batch_size}", flush=True)
        ready = [w for w in workers if w not in starting]
        failed = _schedule(cfg, todo, ready, starting, new_codec, new_renderer, render_config,
                           meta, progress)
    finally:
        for actor in started:
            ray.kill(actor)

    processing = time.perf_counter() - progress.t0
    results = [progress.done[p] for p in sorted(progress.done)]
    report.write_skips(out, results)
    manifest = consolidate(out) if not failed else {}
    summary = report.summary(cfg, plan, info, results, progress, failed, manifest,
                             wall=time.perf_counter() - t_start, processing=processing)
    atomic_write_text(out / report.SUMMARY_FILE, json.dumps(summary, indent=1))
    report.print_summary(summary)
    if failed:
        failures = "; ".join(str(failed[p]) for p in sorted(failed))
        message = f"{len(failed)} part(s) failed: {failures}"
        bugs = [f for f in failed.values() if not f.expected]
        if not bugs:  # every part stopped on a user's mistake: one line, status 2
            raise UserError(message, hint="fix it and re-run: finished parts are kept")
        raise RuntimeError(f"{message}; re-run to retry them. The first failure's traceback, "
                           f"from its worker:\n{bugs[0].trace}")
    return summary


def _schedule(cfg: ConvertConfig, todo: list[int], workers: list, starting: dict,
              new_codec: Any, new_renderer: Any, render_config: Any, meta: dict,
              progress: report.Progress) -> dict[int, PartFailed]:
    """Feed parts to idle workers; retry failed parts (not those that stopped on a user's
    mistake: it would recur); returns {part: failure} of parts given up.

    `starting`: workers still coming up -> their readiness refs.
    """
    attempts: Counter = Counter()
    failed: dict[int, PartFailed] = {}
    idle, queue = list(workers), list(todo)
    running: dict[Any, tuple[tuple, int]] = {}  # part generator -> (worker, part)
    idle_since: list[float] = []  # when each worker ran out of parts
    progress.start_clock()
    while queue or running:
        for w, refs in list(starting.items()):
            if queue and len(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) == len(refs):
                del starting[w]
                idle.append(w)
        if not running and not idle:
            time.sleep(0.5)  # only workers still starting
            continue
        while queue and idle:
            worker, part = idle.pop(), queue.pop(0)
            gen = worker[0].convert_part.options(num_returns="streaming").remote(
                cfg, part, render_config, meta, worker[1])
            running[gen] = (worker, part)
            progress.live[part] = (0, 0)
        ready, _ = ray.wait(list(running), num_returns=1, timeout=min(1.0, cfg.progress_every))
        for gen in ready:
            worker, part = running[gen]
            try:
                msg = ray.get(next(gen))
            except StopIteration:
                del running[gen]
                idle.append(worker)
                if not queue:  # no part left for it: idle until the job ends (the tail)
                    idle_since.append(time.perf_counter())
                continue
            except Exception as err:  # noqa: BLE001 - retry the part, later give up on it
                del running[gen]
                progress.live.pop(part, None)
                # Either actor may be dead, or stuck in the abandoned stream (and a dead
                # renderer surfaces as an error of the encoder): replace both, freeing their
                # resources first.
                for actor in filter(None, worker):
                    ray.kill(actor)
                idle.append((new_codec(), new_renderer()))
                # The worker's PartFailed names the document; a dead actor sends no error.
                cause = remote_cause(err)
                failure = (cause if isinstance(cause, PartFailed)
                           else PartFailed.of(part, None, cause))
                attempts[part] += 1
                if attempts[part] <= cfg.max_retries and not failure.expected:
                    print(f"[convert] {str(failure)[:300]}; retrying", flush=True)
                    queue.append(part)
                else:
                    failed[part] = failure
                    print(f"[convert] {str(failure)[:2000]}; given up", flush=True)
                continue
            if msg[0] == "progress":
                progress.live[part] = (msg[1], msg[2])
            elif msg[0] == "result":
                progress.finish(msg[1])
                progress.tick(force=True)
        progress.tick()
    end = time.perf_counter()
    progress.tail_idle = sum(end - t for t in idle_since)
    return failed
