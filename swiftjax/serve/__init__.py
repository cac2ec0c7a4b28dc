"""Serving LLMs behind the OpenAI HTTP API (`launch.deploy`).

  engine      continuous batching: fixed decode slots sharing one KV cache, requests join and
              leave between jitted decode steps, per-request sampling
  openai_api  the HTTP protocol (`/v1/models`, `/v1/chat/completions`, `/v1/completions`,
              server-sent events), limits and errors, tools via the agent templates; `Server`
"""
