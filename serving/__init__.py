"""Quiver-style GNN inference serving: predict each request's sampled-graph size, sample on the
accelerator (Pallas) or on the host accordingly, and place node features by access probability.

`serving/` may use `graphs/` (graph batches, GNN layers); not the other way round.
"""
