"""Benchmarks: each compares swiftjax with the peer its issue names, in one run, and prints ratios."""
