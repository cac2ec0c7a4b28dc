"""Evaluation pieces behind `swiftjax.evaluate` (and `launch.eval`).

  loglik           log p(continuation | context), batched with right padding; rolling windows
  readers          the on-disk layouts of the evaluation sets (LLM-Adapters, MMLU, GSM8K, text)
  multiple_choice  accuracy by log-likelihood, with Wilson confidence intervals
  perplexity       sliding-window perplexity over documents
  gsm8k            greedy generation + exact match of the final number
"""
