"""Spread a batch of prompts over one or more ComfyUI servers, concurrently.

    from vkclient import BatchJob, load_workflow, run_batch

    prompt = load_workflow("workflows/api/lcm_txt2img.json")
    jobs = [BatchJob(prompt, name=f"take {i}") for i in range(8)]
    items = run_batch(["http://gpu1:8188", "http://gpu2:8188"], jobs, output_dir="out", seed_random=True)
    failed = [it for it in items if not it.ok]

Each job goes to the least-busy server: the one with the fewest of our jobs in flight plus what its queue
held when the batch started (ties in turn), at most `per_server` jobs in flight per server. A server that
cannot be reached is left out and its job goes to another one; a job that the server rejected or that
failed is reported, not retried.
"""
from __future__ import annotations

import dataclasses
import random
import threading
from dataclasses import dataclass

from .client import Client
from .results import ComfyClientError, JobTimeout, ProgressEvent, Result, ServerUnreachable
from .workflow import randomize_seeds


@dataclass
class BatchJob:
    """One prompt of a batch; `images` as in Client.prepare; `name` labels its progress and summary."""
    prompt: dict
    images: object = None
    name: str = ""


@dataclass
class BatchItem:
    """The outcome of one BatchJob: `result` when it succeeded, else `error` (an exception)."""
    index: int
    job: BatchJob
    server: str | None = None
    prompt_id: str | None = None
    result: Result | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None and self.error is None


def run_batch(servers, jobs, *, output_dir=None, timeout: float | None = None, progress=None, per_server: int = 1,
              seed_random: bool = False, types=("output", "temp"), websocket: bool = True,
              cancel_on_timeout: bool = True, rng: random.Random | None = None) -> list[BatchItem]:
    """Run `jobs` (BatchJob or plain prompt dicts) on `servers` (URLs or Clients); returns one BatchItem
    per job, in the order given. Files are downloaded into `output_dir` when it is given.

    `progress(event)` gets every job's ProgressEvents (event.job is the job's name) plus "submitted",
    "done" and "failed" events. With `seed_random`, every literal seed input gets a fresh random value per
    job. A job that times out is cancelled on its server unless `cancel_on_timeout` is False; Ctrl-C
    cancels every job still on a server.
    """
    clients = [s if isinstance(s, Client) else Client(s) for s in servers]
    if not clients:
        raise ValueError("run_batch needs at least one server")
    if per_server < 1:
        raise ValueError("per_server must be at least 1")
    rng = rng or random.Random()
    jobs = [j if isinstance(j, BatchJob) else BatchJob(j) for j in jobs]
    for i, job in enumerate(jobs):
        if not job.name:
            job.name = f"job {i + 1}"
        if seed_random:
            job.prompt = randomize_seeds(job.prompt, rng)
    batch = _Batch(clients, jobs, progress, per_server, dict(output_dir=output_dir, timeout=timeout, types=types,
                                                              websocket=websocket, cancel=cancel_on_timeout))
    return batch.run()


class _Batch:
    def __init__(self, clients, jobs, progress, per_server, opts):
        self.clients, self.per_server, self.opts = clients, per_server, opts
        self.items = [BatchItem(i, job) for i, job in enumerate(jobs)]
        self.emit = progress or (lambda ev: None)
        self.emit_lock = threading.Lock()  # callbacks one at a time; never held while taking `cond`
        self.cond = threading.Condition()
        n = len(clients)
        self.in_flight, self.given, self.load = [0] * n, [0] * n, [0] * n
        self.dead: dict[int, BaseException] = {}
        self.pending = list(range(len(jobs)))
        self.threads: list[threading.Thread] = []

    def say(self, ev: ProgressEvent, name: str) -> None:
        with self.emit_lock:
            self.emit(dataclasses.replace(ev, job=name))

    def run(self) -> list[BatchItem]:
        for s, client in enumerate(self.clients):  # what each server already has to do; unreachable: out
            try:
                q = client.queue_info()
                self.load[s] = q["running"] + q["pending"]
            except ServerUnreachable as e:
                self.dead[s] = e
            except ComfyClientError:
                pass  # answers, but not /queue: assume idle
        try:
            self._dispatch()
        except KeyboardInterrupt:  # Ctrl-C: take our prompts off the servers before leaving
            for item in self.items:
                if item.prompt_id and item.result is None and item.error is None:
                    try:
                        Client(item.server).cancel(item.prompt_id)
                    except ComfyClientError:
                        pass
            raise
        for t in self.threads:
            t.join()
        return self.items

    def _dispatch(self) -> None:
        n = len(self.clients)
        with self.cond:
            while True:
                alive = [s for s in range(n) if s not in self.dead]
                if self.pending and not alive:
                    why = "; ".join(str(e) for e in self.dead.values())
                    for i in self.pending:
                        self.items[i].error = ServerUnreachable(f"no server could be reached: {why}")
                        self.say(ProgressEvent("failed", "", "", text=str(self.items[i].error)),
                                 self.items[i].job.name)
                    self.pending.clear()
                free = [s for s in alive if self.in_flight[s] < self.per_server]
                while self.pending and free:
                    s = min(free, key=lambda k: (self.in_flight[k] + self.load[k], self.given[k], k))
                    i = self.pending.pop(0)
                    self.in_flight[s] += 1
                    self.given[s] += 1
                    self.items[i].server = self.clients[s].url
                    t = threading.Thread(target=self._work, args=(s, i), name=f"vkclient-job-{i}", daemon=True)
                    self.threads.append(t)
                    t.start()
                    free = [k for k in alive if self.in_flight[k] < self.per_server]
                if not self.pending and not any(self.in_flight):
                    return
                self.cond.wait(0.5)

    def _work(self, s: int, i: int) -> None:
        client, item, opts = self.clients[s], self.items[i], self.opts
        name = item.job.name
        requeue = False
        try:
            job = client.queue(item.job.prompt, item.job.images, websocket=opts["websocket"])
            item.server, item.prompt_id = client.url, job.prompt_id
            self.say(ProgressEvent("submitted", job.prompt_id, client.url), name)
            try:
                result = job.wait(timeout=opts["timeout"], progress=lambda ev: self.say(ev, name))
            except JobTimeout:
                if opts["cancel"]:
                    try:
                        job.cancel()
                    except ComfyClientError:
                        pass
                raise
            if opts["output_dir"] is not None:
                client.download_outputs(result, opts["output_dir"], opts["types"])
            item.result = result
            self.say(ProgressEvent("done", job.prompt_id, client.url, text=f"in {result.seconds:.1f} s"), name)
        except ServerUnreachable as e:
            with self.cond:
                self.dead[s] = e
                # never reached this server: another one takes the job
                requeue = item.prompt_id is None and len(self.dead) < len(self.clients)
            if not requeue:
                item.error = e
                self.say(ProgressEvent("failed", item.prompt_id or "", client.url, text=str(e)), name)
        except BaseException as e:  # noqa: BLE001 - reported per job, the batch goes on
            item.error = e
            self.say(ProgressEvent("failed", item.prompt_id or "", client.url, text=str(e)), name)
        finally:
            with self.cond:
                self.in_flight[s] -= 1
                if requeue:
                    item.server = None
                    self.pending.insert(0, i)
                self.cond.notify_all()
