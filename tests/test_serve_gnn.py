"""The GNN server end to end on Cora: HTTP API, batching, status codes, metrics, the launcher."""

import concurrent.futures
import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time

from absl.testing import absltest
import jax
import numpy as np

from tests import testutil


def _post(port: int, body, path: str = "/v1/infer") -> tuple[int, dict]:
  conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
  data = body if isinstance(body, bytes) else json.dumps(body).encode()
  conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
  r = conn.getresponse()
  out = r.status, json.loads(r.read() or b"{}")
  conn.close()
  return out


def _get(port: int, path: str) -> tuple[int, str]:
  conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
  conn.request("GET", path)
  r = conn.getresponse()
  out = r.status, r.read().decode()
  conn.close()
  return out


class ServeGNNTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = testutil.require_shared("planetoid", "ind.cora.graph").parent
    from graphs import planetoid  # pylint: disable=g-import-not-at-top
    from graphs import sage_train  # pylint: disable=g-import-not-at-top
    from serving import graph as graph_lib  # pylint: disable=g-import-not-at-top
    cls.model_dir = cls.create_tempdir_cls()
    cls.metrics = sage_train.train_and_evaluate(
        sage_train.TrainConfig(dataset="cora", data_root=str(root), epochs=60), cls.model_dir)
    cls.model = sage_train.load_model(cls.model_dir)
    cls.data = planetoid.load_planetoid(str(root), "cora", normalize_features=True)
    cls.graph = graph_lib.from_edges(cls.data.dst, cls.data.src, num_nodes=cls.data.num_nodes)
    cls.root = root

  @classmethod
  def create_tempdir_cls(cls) -> str:
    import tempfile  # pylint: disable=g-import-not-at-top
    return tempfile.mkdtemp(prefix="serve_gnn_test_")

  def _serve(self, num_devices: int = 1, **server_kw):
    from serving import app  # pylint: disable=g-import-not-at-top
    from serving import server as server_lib  # pylint: disable=g-import-not-at-top
    cfg = app.ServeConfig(dispatch=server_kw.pop("dispatch", "host"),
                          server=server_lib.ServerConfig(**server_kw))
    server = app.build_server(self.graph, self.data.features, self.model, cfg,
                              devices=jax.devices()[:num_devices])
    httpd = server_lib.make_http_server(server, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def close():
      httpd.shutdown()
      server.stop()
      httpd.server_close()

    self.addCleanup(close)
    return server, httpd.server_address[1]

  def test_served_predictions_are_as_accurate_as_the_full_graph_model(self):
    # A generous deadline: this checks answers, not latency, on a shared 2-core CI machine.
    server, port = self._serve(max_batch_nodes=256, max_wait_ms=5, deadline_ms=20000)
    server.start()
    test_idx = self.data.test_idx
    chunks = np.array_split(test_idx, 20)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      answers = list(pool.map(lambda c: _post(port, {"nodes": c.tolist()}), chunks))
    self.assertEqual([status for status, _ in answers], [200] * len(chunks), answers)
    preds = np.concatenate([np.asarray(a[1]["predictions"]) for a in answers])
    served_acc = float(np.mean(preds == self.data.labels[test_idx]))
    # Sampling (fanouts 25, 10) approximates the full neighbourhood mean; on Cora (mean degree
    # ~4) the served accuracy stays within a few points of the full-graph model's.
    self.assertGreater(served_acc, self.metrics["test_acc"] - 0.03)
    probs = np.asarray(answers[0][1]["probabilities"])
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    self.assertEqual(answers[0][1]["nodes"], chunks[0].tolist())
    # Concurrent requests were batched: fewer batches than requests.
    status, text = _get(port, "/metrics")
    self.assertEqual(status, 200)
    batches = sum(int(v) for v in re.findall(r'gnn_batches_total\{backend="\w+"\} (\d+)', text))
    self.assertLess(batches, len(chunks))
    self.assertIn('gnn_requests_total{code="200"} 20', text)
    self.assertRegex(text, r'gnn_request_latency_seconds_bucket\{le="\+Inf"\} 20')

  def test_one_worker_per_device_with_features_spread_over_them(self):
    server, port = self._serve(num_devices=2, max_batch_nodes=64, max_wait_ms=1,
                               deadline_ms=20000)
    self.assertLen(server.engines, 2)
    self.assertEqual({str(e.device) for e in server.engines}, {str(d) for d in jax.devices()[:2]})
    # The warm tier is split over the two devices, the hot tier on both.
    self.assertLen(server.features.warm.sharding.device_set, 2)
    server.start()
    chunks = np.array_split(self.data.test_idx, 40)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      answers = list(pool.map(lambda c: _post(port, {"nodes": c.tolist()}), chunks))
    self.assertEqual([status for status, _ in answers], [200] * len(chunks))
    preds = np.concatenate([np.asarray(a[1]["predictions"]) for a in answers])
    self.assertGreater(float(np.mean(preds == self.data.labels[self.data.test_idx])),
                       self.metrics["test_acc"] - 0.03)

  def test_repeated_ids_embeddings_and_health(self):
    server, port = self._serve(max_batch_nodes=64)
    server.start()
    status, body = _post(port, {"nodes": [5, 7, 5], "embeddings": True})
    self.assertEqual(status, 200, body)
    self.assertEqual(body["predictions"][0], body["predictions"][2])
    self.assertLen(body["embeddings"], 3)
    self.assertLen(body["embeddings"][0], self.model.config["model"]["hidden"])
    status, text = _get(port, "/healthz")
    self.assertEqual((status, json.loads(text)["num_nodes"]), (200, 2708))
    # The library path without HTTP: one engine, all three stages, repeats answered per position.
    batch = server.engines[0].infer([5, 7, 5])
    self.assertEqual(batch.logits.shape, (3, self.model.config["num_classes"]))
    np.testing.assert_array_equal(batch.logits[0], batch.logits[2])

  def test_bad_requests_get_400_naming_the_problem(self):
    server, port = self._serve(max_batch_nodes=64)
    server.start()
    cases = [(b"{not json", "not JSON"), ({"ids": [1]}, '"nodes" list'),
             ({"nodes": []}, "non-empty list"), ({"nodes": [1, True]}, "integer node ids"),
             ({"nodes": [1, 99999]}, "unknown node id 99999"),
             ({"nodes": [-1]}, "unknown node id -1"),
             ({"nodes": [1], "deadline_ms": 0}, "deadline_ms")]
    for body, message in cases:
      status, answer = _post(port, body)
      self.assertEqual(status, 400, body)
      self.assertIn(message, answer["error"])
    self.assertEqual(_post(port, {"nodes": [1]}, path="/v2/infer")[0], 404)
    self.assertEqual(_get(port, "/nope")[0], 404)

  def test_overload_gets_429_and_missed_deadline_503(self):
    # Workers not started: the first request waits in the queue of one until its deadline.
    server, port = self._serve(queue_size=1, max_batch_nodes=1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
      first = pool.submit(_post, port, {"nodes": [1], "deadline_ms": 1500})
      while server.queue_depth() < 1:
        time.sleep(0.01)
      status, body = _post(port, {"nodes": [2]})
      self.assertEqual(status, 429)
      self.assertIn("overloaded", body["error"])
      status, body = first.result()
    self.assertEqual(status, 503)
    self.assertIn("deadline", body["error"])
    _, text = _get(port, "/metrics")
    self.assertIn('gnn_requests_total{code="429"} 1', text)
    self.assertIn('gnn_requests_total{code="503"} 1', text)

  def test_launcher_serves_and_stops(self):
    proc = subprocess.Popen(
        [sys.executable, "-m", "launch.serve_gnn", "--dataset=cora",
         f"--data_root={self.root}", f"--model_dir={self.model_dir}", "--port=0",
         "--max_seconds=60", "--dispatch=adaptive"],
        cwd=testutil.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=testutil.subprocess_env())
    try:
      line = proc.stdout.readline()
      m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
      self.assertIsNotNone(m, line + proc.stderr.read() if proc.poll() is not None else line)
      port = int(m.group(1))
      status, body = _post(port, {"nodes": [0, 1, 2]})
      self.assertEqual(status, 200, body)
      self.assertLen(body["predictions"], 3)
    finally:
      proc.terminate()
      out, err = proc.communicate(timeout=60)
    self.assertIn("stopped", out, err)

  def test_two_replicas_split_the_features_and_answer_like_one_server(self):
    with socket.socket() as sock:
      sock.bind(("127.0.0.1", 0))
      coordinator = f"127.0.0.1:{sock.getsockname()[1]}"
    procs, ports = [], []
    try:
      for i in range(2):
        env = dict(testutil.subprocess_env(), JAX_COORDINATOR_ADDRESS=coordinator,
                   JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "launch.serve_gnn", "--dataset=cora",
             f"--data_root={self.root}", f"--model_dir={self.model_dir}", "--port=0",
             "--distributed", "--dispatch=host", "--max_seconds=240",
             # Answers, not latency: a first request compiles, slow on a busy CI machine.
             "--deadline_ms=60000"],
            cwd=testutil.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env))
      for proc in procs:
        for line in proc.stdout:
          m = re.search(r"http://127\.0\.0\.1:(\d+) .*replica \d of 2", line)
          if m:
            ports.append(int(m.group(1)))
            break
      self.assertLen(ports, 2, [p.stderr.read()[-2000:] for p in procs if p.poll() is not None])
      # The same sequence of single-node requests to each replica and to one in-process server
      # with the same settings: same sampling keys, so equal answers mean the features fetched
      # from the peer are the right rows.
      server, port = self._serve(dispatch="host", max_batch_nodes=1024, deadline_ms=60000)
      server.start()
      nodes = list(range(0, 2708, 97))
      answers = [[_post(p, {"nodes": [v]}) for v in nodes] for p in ports + [port]]
      for replica in answers:
        self.assertEqual([s for s, _ in replica], [200] * len(nodes))
      probs = [[body["probabilities"] for _, body in replica] for replica in answers]
      np.testing.assert_allclose(probs[0], probs[2], atol=2e-6)
      np.testing.assert_allclose(probs[1], probs[2], atol=2e-6)
      for p in ports:
        _, text = _get(p, "/metrics")
        remote = int(float(re.search(r"^gnn_remote_feature_rows (\S+)$", text, re.M).group(1)))
        self.assertGreater(remote, 0)
      status, body = _post(ports[0], {"nodes": [0, 1]}, path="/v1/features")
      self.assertEqual(status, 400)  # each replica serves only the rows it owns ...
      self.assertIn("not owned by replica 0", body["error"])
    finally:
      for proc in procs:
        proc.terminate()
      for proc in procs:
        proc.communicate(timeout=60)

  def test_launcher_errors_are_one_line(self):
    r = testutil.run_module("launch.serve_gnn", "--dataset=cora", "--data_root=/nonexistent",
                            "--model_dir=/nonexistent/model", "--port=0")
    self.assertEqual(r.returncode, 2, r.stderr)
    self.assertRegex(r.stderr.strip().splitlines()[-1], r"^error: .*/nonexistent")
    r = testutil.run_module("launch.serve_gnn", "--port=0")
    self.assertEqual(r.returncode, 2, r.stderr)
    self.assertIn("error: give exactly one of --dataset or --edge_list", r.stderr)
    r = testutil.run_module("launch.serve_gnn", "--edge_list=/nonexistent/g.txt",
                            "--features=/nonexistent/x.npy", f"--model_dir={self.model_dir}")
    self.assertEqual(r.returncode, 2, r.stderr)
    self.assertIn("error: /nonexistent/g.txt does not exist", r.stderr)


if __name__ == "__main__":
  absltest.main()
