"""The GNN the server answers with: a trained GraphSAGE run, as the engine's `forward`.

`graphs.sage_train.load_model(workdir)` reads a run (config.json + Orbax params). This module adds
the serving side of that contract:
  - `make_forward(config)`: `forward(params, sample, features) -> (logits, embeddings)`, each
    [max_nodes, .], pure and jittable, over a `SampledSubgraph` and its gathered feature rows
    (the signature `serving/engine.py` takes); rows 0..num_seeds-1 answer the seeds;
  - `prepare_features(config, features)`: the preprocessing training applied (row normalisation
    when config.json says `normalize_features`).
With fanouts at least the degrees (every neighbour drawn) the seed rows equal the full-graph
outputs; smaller fanouts give GraphSAGE's sampled estimate.
"""

from typing import Any, Callable

import numpy as np

from graphs import planetoid
from graphs import sage
from graphs import sage_train
from serving import subgraph


def make_forward(config: dict[str, Any]) -> Callable:
  """`forward(params, sample, features) -> (logits [max_nodes, C], embeddings [max_nodes, H])`.

  Args:
    config: a run's config.json (only its `model` entry is used).

  `features` are the sample's rows, [max_nodes, F] (padding rows are ignored: padded edges are
  masked and padding nodes only feed padding nodes).
  """
  cfg = sage_train.model_config(config)

  def forward(params, sample: subgraph.SampledSubgraph, features):
    graph = subgraph.to_graphs_tuple(sample, features)
    return sage.apply(params, graph, cfg, edge_mask=sample.edge_mask)

  return forward


def prepare_features(config: dict[str, Any], features: np.ndarray) -> np.ndarray:
  """Raw [N, F] node features as the model was trained on them (row-normalised if it was)."""
  features = np.asarray(features, dtype=np.float32)
  return planetoid.row_normalize(features) if config.get("normalize_features") else features
