"""Dispatcher: crossover from cost curves, routing, calibration round trip."""

import os

from absl.testing import absltest
import numpy as np

from graphs.errors import GraphError
from serving import dispatcher


class CrossoverTest(absltest.TestCase):

  def test_device_wins_from_the_crossing_of_the_curves(self):
    psgs = [10, 100, 1000, 10000]
    host = [1e-5, 1e-4, 0.8e-3, 1e-2]  # grows with size
    device = [1e-3, 1e-3, 1e-3, 2e-3]  # fixed cost dominates
    x = dispatcher.crossover(psgs, host, device)
    # Host wins up to 1000 (0.8e-3 < 1e-3), the device at 10000, so
    # the crossing lies between 1000 and 10000.
    self.assertGreater(x, 1000)
    self.assertLess(x, 10000)

  def test_never_and_always(self):
    self.assertEqual(dispatcher.crossover([1, 2], [1, 1], [2, 2]), float("inf"))
    self.assertEqual(dispatcher.crossover([1, 2], [2, 2], [1, 1]), 0.0)

  def test_route_follows_crossover_and_counts(self):
    cal = dispatcher.Calibration(psgs=[1, 10], host_s=[1, 10], device_s=[5, 5], crossover=5.0)
    d = dispatcher.Dispatcher(cal)
    self.assertEqual(d.route(1.0), dispatcher.HOST)
    self.assertEqual(d.route(50.0), dispatcher.DEVICE)
    self.assertEqual(d.counts, {"host": 1, "device": 1})
    host_s, device_s = d.predicted_seconds(100.0)  # extrapolated along the last segment
    self.assertAlmostEqual(host_s, 100.0, places=6)
    self.assertAlmostEqual(device_s, 5.0, places=6)

  def test_small_predicted_gains_stay_on_the_host(self):
    cal = dispatcher.Calibration(psgs=[10, 1000], host_s=[1.0, 100.0], device_s=[0.95, 50.0],
                                 crossover=1.0)
    d = dispatcher.Dispatcher(cal, min_gain=0.1)
    self.assertEqual(d.route(10.0), dispatcher.HOST)  # device predicted only 5% faster
    self.assertEqual(d.route(1000.0), dispatcher.DEVICE)  # 50% faster
    self.assertEqual(dispatcher.Dispatcher(cal, min_gain=0.0).route(10.0), dispatcher.DEVICE)
    with self.assertRaisesRegex(GraphError, "min_gain"):
      dispatcher.Dispatcher(cal, min_gain=1.0)

  def test_fixed_policies_and_errors(self):
    self.assertEqual(dispatcher.Dispatcher(policy="host").route(1e9), "host")
    self.assertEqual(dispatcher.Dispatcher(policy="device").route(0), "device")
    with self.assertRaisesRegex(GraphError, "adaptive dispatch needs a calibration"):
      dispatcher.Dispatcher()
    with self.assertRaisesRegex(GraphError, "must be adaptive, host or device"):
      dispatcher.Dispatcher(policy="gpu")


class CalibrateTest(absltest.TestCase):

  def test_calibrate_measures_both_curves_and_round_trips(self):
    psgs = np.arange(1, 2001, dtype=np.float64)
    spin = lambda n: sum(range(n))  # pylint: disable=unnecessary-lambda-assignment
    cal = dispatcher.Dispatcher.calibrate(
        host_fn=lambda s: spin(200 * len(s)),  # grows with the batch
        device_fn=lambda s: spin(20000),  # a fixed cost
        node_psgs=psgs, batch_sizes=(1, 4, 1000), repeats=3, machine="test")
    self.assertEqual(len(cal.psgs), 3)
    self.assertEqual(cal.psgs, sorted(cal.psgs))
    self.assertLess(cal.host_s[0], cal.device_s[0])  # small batch: host is cheaper
    self.assertGreater(cal.host_s[-1], cal.device_s[-1])  # large batch: device is cheaper
    self.assertGreater(cal.crossover, cal.psgs[0])
    self.assertLess(cal.crossover, cal.psgs[-1])
    path = os.path.join(self.create_tempdir().full_path, "cal.json")
    cal.save(path)
    self.assertEqual(dispatcher.Calibration.load(path), cal)
    with open(path, "w") as f:
      f.write("{}")
    with self.assertRaisesRegex(GraphError, "cal.json: not a dispatcher calibration"):
      dispatcher.Calibration.load(path)


if __name__ == "__main__":
  absltest.main()
