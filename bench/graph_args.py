"""The `--graph` flag the sampling benchmarks share: `slashdot`, `rmat` or a path."""

import os
import sys

from graphs.errors import GraphError
from serving import graph as graph_lib

SLASHDOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                        "shared", "data", "snap", "soc-Slashdot0902.txt.gz")


def build_graph(args) -> tuple[graph_lib.CSRGraph, str]:
  """The graph named by `args.graph` (symmetric) and a description.

  `rmat` uses `args.scale`, `args.edges`, `args.seed`; `slashdot` is the SNAP file in
  ../shared/data; anything else is a path for `serving.graph.load_graph`.
  """
  if args.graph == "rmat":
    return (graph_lib.rmat(args.scale, args.edges, seed=args.seed),
            f"rmat scale={args.scale} pairs={args.edges}")
  path = SLASHDOT if args.graph == "slashdot" else args.graph
  try:
    return graph_lib.load_graph(path), os.path.basename(path)
  except GraphError as e:  # a bad --graph is a user mistake: one line, no traceback
    sys.exit(f"error: {e} (--graph=rmat gives a synthetic graph)")
