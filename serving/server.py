"""An HTTP JSON server for GNN inference with dynamic batching and a sample -> gather -> forward pipeline.

API (all JSON):
  POST /v1/infer   {"nodes": [ids], "embeddings": false, "deadline_ms": 1000}
                   -> 200 {"nodes": [...], "predictions": [class per node],
                           "probabilities": [[...]], "embeddings": [[...]] (if asked),
                           "backend": "host"|"device"}
                   400 malformed body / unknown node id, 429 admission queue full,
                   503 deadline passed before the answer (or the server is stopping).
  GET  /healthz    -> 200 {"status": "ok", ...}
  GET  /metrics    -> Prometheus text exposition (counters, latency histogram, queue depth).

Flow: the HTTP thread validates a request and puts it on a bounded admission queue (full: 429).
One batcher thread takes requests until `max_batch_nodes` distinct seeds or `max_wait_ms` after
the first, drops those whose deadline passed, and hands the batch to a worker. Each worker owns
one device (an `Engine`) and runs its three stages in three threads joined by bounded queues, so
batch n+1 is sampled and gathered while batch n is in the forward pass. The HTTP thread waits on
its request's event until the deadline.
"""

import base64
import dataclasses
import http.server
import json
import queue
import threading
import time
from typing import Sequence

import numpy as np

from graphs.errors import GraphError
from serving.engine import Batch
from serving.engine import Engine

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclasses.dataclass(frozen=True)
class ServerConfig:
  """Batching and admission settings.

  Attributes:
    max_batch_nodes: a batch closes once it holds this many distinct seed nodes.
    max_wait_ms: ... or this long after its first request arrived.
    queue_size: admission queue bound (requests); beyond it requests get 429.
    deadline_ms: default per-request deadline; a request not answered by then gets 503.
    pipeline_depth: batches in flight between two stages of a worker.
    max_request_nodes: largest `nodes` list one request may carry.
    batching: False answers each request on its own HTTP thread (sample, gather, forward for
      that request alone, no queue): the per-request baseline of DGL/PyG example servers,
      kept for comparison.
  """
  max_batch_nodes: int = 1024
  max_wait_ms: float = 2.0
  queue_size: int = 4096
  deadline_ms: float = 1000.0
  pipeline_depth: int = 2
  max_request_nodes: int = 4096
  batching: bool = True


class Request:
  """One client request waiting for its answer."""

  def __init__(self, ids: np.ndarray, deadline: float, want_embeddings: bool):
    self.ids = ids
    self.deadline = deadline
    self.want_embeddings = want_embeddings
    self.arrived = time.perf_counter()
    self.done = threading.Event()
    self.result: dict | None = None
    self.status = 0


class Metrics:
  """Thread-safe counters rendered in Prometheus' text format."""

  def __init__(self):
    self._lock = threading.Lock()
    self.requests = {}
    self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
    self.latency_sum = 0.0
    self.batches = {"host": 0, "device": 0}
    self.batch_seeds = 0
    self.sampled_edges = 0
    self.stage_seconds: dict[str, float] = {}

  def observe_stage(self, stage: str, seconds: float) -> None:
    with self._lock:
      self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

  def observe_request(self, status: int, seconds: float) -> None:
    with self._lock:
      self.requests[status] = self.requests.get(status, 0) + 1
      if status == 200:
        i = int(np.searchsorted(LATENCY_BUCKETS, seconds))
        self.latency_counts[i] += 1
        self.latency_sum += seconds

  def observe_batch(self, batch: Batch) -> None:
    with self._lock:
      self.batches[batch.backend] = self.batches.get(batch.backend, 0) + 1
      self.batch_seeds += len(batch.seeds)
      self.sampled_edges += batch.sampled_edges

  def render(self, gauges: dict[str, float]) -> str:
    with self._lock:
      out = ["# HELP gnn_requests_total Requests answered, by HTTP status.",
             "# TYPE gnn_requests_total counter"]
      out += [f'gnn_requests_total{{code="{c}"}} {n}' for c, n in sorted(self.requests.items())]
      out += ["# HELP gnn_request_latency_seconds Latency of answered (200) requests.",
              "# TYPE gnn_request_latency_seconds histogram"]
      cum = 0
      for le, n in zip(list(LATENCY_BUCKETS) + ["+Inf"], self.latency_counts):
        cum += n
        out.append(f'gnn_request_latency_seconds_bucket{{le="{le}"}} {cum}')
      out += [f"gnn_request_latency_seconds_sum {self.latency_sum:.6f}",
              f"gnn_request_latency_seconds_count {cum}",
              "# HELP gnn_batches_total Batches run, by sampling backend.",
              "# TYPE gnn_batches_total counter"]
      out += [f'gnn_batches_total{{backend="{b}"}} {n}' for b, n in sorted(self.batches.items())]
      out += ["# TYPE gnn_batch_seeds_total counter", f"gnn_batch_seeds_total {self.batch_seeds}",
              "# TYPE gnn_sampled_edges_total counter",
              f"gnn_sampled_edges_total {self.sampled_edges}",
              "# HELP gnn_stage_seconds_total Time spent in each pipeline stage.",
              "# TYPE gnn_stage_seconds_total counter"]
      out += [f'gnn_stage_seconds_total{{stage="{k}"}} {v:.6f}'
              for k, v in sorted(self.stage_seconds.items())]
      for name, value in gauges.items():
        out += [f"# TYPE {name} gauge", f"{name} {value}"]
      return "\n".join(out) + "\n"


class GNNServer:
  """Batcher + one pipelined worker per engine (device). `start()`, `submit()`, `stop()`.

  Args:
    engines: one `Engine` per device; batches go to whichever worker is free.
    config: batching and admission settings.
    features: the feature source; one with `rows(ids)` (a replica's partition) is also served
      to peer replicas at `POST /v1/features`.
  """

  def __init__(self, engines: Sequence[Engine], config: ServerConfig = ServerConfig(),
               features=None):
    if not engines:
      raise GraphError("GNNServer needs at least one engine")
    self.engines = list(engines)
    self.config = config
    self.metrics = Metrics()
    self._admission: queue.Queue = queue.Queue(maxsize=config.queue_size)
    self._work: queue.Queue = queue.Queue(maxsize=config.pipeline_depth * len(self.engines))
    self._stopping = threading.Event()
    self._threads: list[threading.Thread] = []
    self.num_nodes = self.engines[0].num_nodes
    self.features = features

  # -- client side -------------------------------------------------------------------------------

  def parse(self, body: bytes) -> Request:
    """Validates a `/v1/infer` body; raises GraphError with the reason (answered with 400)."""
    try:
      obj = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as e:
      raise GraphError(f"body is not JSON: {e}") from None
    if not isinstance(obj, dict) or "nodes" not in obj:
      raise GraphError('body must be a JSON object with a "nodes" list of node ids')
    nodes = obj["nodes"]
    if (not isinstance(nodes, list) or not nodes
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in nodes)):
      raise GraphError('"nodes" must be a non-empty list of integer node ids')
    if len(nodes) > self.config.max_request_nodes:
      raise GraphError(f'"nodes" has {len(nodes)} ids; at most '
                       f"{self.config.max_request_nodes} per request")
    ids = np.asarray(nodes, np.int64)
    self.engines[0].check_ids(ids)
    deadline_ms = obj.get("deadline_ms", self.config.deadline_ms)
    if not isinstance(deadline_ms, (int, float)) or deadline_ms <= 0:
      raise GraphError('"deadline_ms" must be a positive number')
    return Request(ids, time.perf_counter() + deadline_ms / 1e3, bool(obj.get("embeddings")))

  def submit(self, request: Request) -> bool:
    """Queues a request; False when the admission queue is full (answer 429)."""
    if self._stopping.is_set():
      return False
    if not self.config.batching:
      self._answer_alone(request)
      return True
    try:
      self._admission.put_nowait(request)
      return True
    except queue.Full:
      return False

  def _answer_alone(self, request: Request) -> None:
    """The per-request path: this thread runs all three stages for this request only."""
    engine = self.engines[0]
    try:
      ids = np.unique(request.ids).astype(np.int32)
      batch = engine.forward(engine.gather(engine.sample(Batch(seeds=ids, payload=[request]))))
      self._respond(batch)
    except Exception as e:  # pylint: disable=broad-except
      request.status = 503
      request.result = {"error": f"inference failed: {e}"}
      request.done.set()

  def wait(self, request: Request) -> tuple[int, dict]:
    """Blocks until answered or the deadline; returns (HTTP status, JSON object)."""
    answered = request.done.wait(max(0.0, request.deadline - time.perf_counter()))
    if not answered:
      request.status = 503
      body = {"error": "deadline exceeded before the request was served"}
    elif request.status != 200:
      body = request.result or {"error": "deadline exceeded before the request was served"}
    else:
      body = request.result
    self.metrics.observe_request(request.status, time.perf_counter() - request.arrived)
    return request.status, body

  # -- server side -------------------------------------------------------------------------------

  def start(self) -> "GNNServer":
    if not self.config.batching:
      return self

    def spawn(name, fn, *args):
      t = threading.Thread(target=fn, args=args, daemon=True, name=name)
      t.start()
      self._threads.append(t)

    spawn("gnn-batcher", self._batcher)
    for i, engine in enumerate(self.engines):
      depth = self.config.pipeline_depth
      sampled, gathered = queue.Queue(depth), queue.Queue(depth)
      spawn(f"gnn-sample-{i}", self._stage, self._work, sampled, engine.sample)
      spawn(f"gnn-gather-{i}", self._stage, sampled, gathered, engine.gather)
      spawn(f"gnn-forward-{i}", self._stage, gathered, None, engine.forward)
    return self

  def stop(self, timeout: float = 120.0) -> None:
    """Stops taking requests, answers what is queued with 503, and joins the threads.

    Each worker finishes the stage it is in (a first-call compile can take seconds on a busy
    machine) and then exits, so no worker is left running native code once this returns.

    Raises:
      RuntimeError: a worker was still running after `timeout` seconds.
    """
    self._stopping.set()
    deadline = time.perf_counter() + timeout
    for t in self._threads:
      t.join(timeout=max(0.0, deadline - time.perf_counter()))
    alive = [t.name for t in self._threads if t.is_alive()]
    self._threads = [t for t in self._threads if t.is_alive()]
    while True:
      try:
        r = self._admission.get_nowait()
      except queue.Empty:
        break
      r.status = 503
      r.done.set()
    if alive:
      raise RuntimeError(f"GNN server workers still running after {timeout:.0f} s: {alive}")

  def queue_depth(self) -> int:
    return self._admission.qsize()

  def _batcher(self) -> None:
    cfg = self.config
    while not self._stopping.is_set():
      try:
        first = self._admission.get(timeout=0.05)
      except queue.Empty:
        continue
      requests, seeds = [first], set(first.ids.tolist())
      close_at = time.perf_counter() + cfg.max_wait_ms / 1e3
      while len(seeds) < cfg.max_batch_nodes:
        try:
          r = self._admission.get(timeout=max(0.0, close_at - time.perf_counter()))
        except queue.Empty:
          break
        requests.append(r)
        seeds.update(r.ids.tolist())
      now = time.perf_counter()
      live = [r for r in requests if r.deadline > now]
      for r in requests:
        if r.deadline <= now:
          r.status = 503
          r.done.set()
      if not live:
        continue
      ids = np.unique(np.concatenate([r.ids for r in live])).astype(np.int32)
      batch = Batch(seeds=ids, payload=live)
      while not self._stopping.is_set():
        try:
          self._work.put(batch, timeout=0.05)
          break
        except queue.Full:
          continue

  def _stage(self, inbox: queue.Queue, outbox: queue.Queue | None, fn) -> None:
    while not self._stopping.is_set():
      try:
        batch = inbox.get(timeout=0.05)
      except queue.Empty:
        continue
      t = time.perf_counter()
      try:
        batch = fn(batch)
        self.metrics.observe_stage(fn.__name__, time.perf_counter() - t)
      except Exception as e:  # pylint: disable=broad-except
        # A failed batch answers its requests with 503 instead of killing the worker.
        for r in batch.payload:
          r.status = 503
          r.result = {"error": f"inference failed: {e}"}
          r.done.set()
        continue
      if outbox is not None:
        while not self._stopping.is_set():
          try:
            outbox.put(batch, timeout=0.05)
            break
          except queue.Full:
            continue
      else:
        self._respond(batch)

  def _respond(self, batch: Batch) -> None:
    self.metrics.observe_batch(batch)
    logits = batch.logits.astype(np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    for r in batch.payload:
      rows = np.searchsorted(batch.seeds, r.ids)
      result = {"nodes": r.ids.tolist(), "predictions": probs[rows].argmax(-1).tolist(),
                "probabilities": np.round(probs[rows], 6).tolist(), "backend": batch.backend}
      if r.want_embeddings:
        result["embeddings"] = np.round(batch.embeddings[rows].astype(np.float64), 6).tolist()
      r.result = result
      r.status = 200
      r.done.set()


def make_http_server(server: GNNServer, host: str = "127.0.0.1",
                     port: int = 8000) -> http.server.ThreadingHTTPServer:
  """A threading HTTP server exposing `server` (call `.serve_forever()`; port 0 picks a free one)."""

  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Keep-alive responses are small writes; with Nagle's algorithm on, the body waits for the
    # client's delayed ACK of the headers (~40 ms on Linux) on every request.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # quiet: /metrics is the log
      del fmt, args

    def _send(self, status: int, body, content_type: str = "application/json") -> None:
      data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
      self.send_response(status)
      self.send_header("Content-Type", content_type)
      self.send_header("Content-Length", str(len(data)))
      if status == 429:
        self.send_header("Retry-After", "1")
      self.end_headers()
      self.wfile.write(data)

    def do_GET(self):
      if self.path == "/healthz":
        self._send(200, {"status": "ok", "num_nodes": server.num_nodes,
                         "workers": len(server.engines)})
      elif self.path == "/metrics":
        gauges = {"gnn_queue_depth": server.queue_depth(),
                  "gnn_forward_compiles": sum(e.compiles for e in server.engines)}
        if hasattr(server.features, "remote_rows"):
          gauges["gnn_remote_feature_rows"] = server.features.remote_rows
        self._send(200, server.metrics.render(gauges), "text/plain; version=0.0.4")
      else:
        self._send(404, {"error": f"no such path {self.path}"})

    def _features(self):
      """Peer replicas read the rows this replica owns: {"nodes": [...]} -> base64 float32."""
      length = int(self.headers.get("Content-Length") or 0)
      try:
        ids = np.asarray(json.loads(self.rfile.read(length))["nodes"], np.int64)
        rows = server.features.rows(ids)
      except (GraphError, ValueError, KeyError, TypeError) as e:
        self._send(400, {"error": str(e)})
        return
      self._send(200, {"dim": int(rows.shape[1]),
                       "rows": base64.b64encode(rows.astype(np.float32).tobytes()).decode()})

    def do_POST(self):
      if self.path == "/v1/features" and hasattr(server.features, "rows"):
        self._features()
        return
      if self.path != "/v1/infer":
        self._send(404, {"error": f"no such path {self.path}"})
        return
      length = int(self.headers.get("Content-Length") or 0)
      body = self.rfile.read(length)
      try:
        request = server.parse(body)
      except GraphError as e:
        server.metrics.observe_request(400, 0.0)
        self._send(400, {"error": str(e)})
        return
      if not server.submit(request):
        server.metrics.observe_request(429, 0.0)
        self._send(429, {"error": "server overloaded: admission queue full, retry later"})
        return
      status, obj = server.wait(request)
      self._send(status, obj)

  httpd = http.server.ThreadingHTTPServer((host, port), Handler)
  httpd.daemon_threads = True
  return httpd
