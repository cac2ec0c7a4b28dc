"""The OpenAI HTTP API over an `Engine`: `/v1/models`, `/v1/chat/completions`, `/v1/completions`.

Requests and responses follow OpenAI's JSON (chat messages with content parts and tool calls,
`n`, `stop`, `seed`, `max_tokens` / `max_completion_tokens`, `stream` with
`stream_options.include_usage`); `top_k` and `repetition_penalty` are accepted as extra fields
(as vLLM does). Fields this server cannot honour (`logprobs`, presence/frequency penalties,
JSON response formats, `suffix`) are refused with a 400 rather than ignored.

Tools: with an agent template (`hermes` by default; `react`, `toolbench`), the tool list and
earlier calls/results are written into the messages by `swiftjax.agent.templates.to_chat`
(OpenAI messages are first normalised by `swiftjax.agent.converters.from_hermes`), and the answer
is read back by `swiftjax.agent.actions.parse` into `tool_calls`. Without one, `tools` go to the
tokenizer's own chat template. A streamed answer to a request with tools is sent whole at the end
(a call can only be recognised once it is complete).

Errors are OpenAI-style bodies `{"error": {"message", "type", "param", "code"}}`: 400 malformed
JSON, unknown model or bad field; 401 wrong API key; 404 unknown path; 411/413 missing or too
large body; 429 queue full; 503 stopping; 504 timeout.

The HTTP layer is `http.server.ThreadingHTTPServer` (one thread per connection, keep-alive) with
Nagle's algorithm off, as small keep-alive writes would otherwise wait for the client's delayed
ACK (~40 ms on Linux), and a listen backlog of 256 rather than socketserver's 5. Streams use
chunked transfer encoding, so connections stay reusable.
"""

import dataclasses
import hmac
import http.server
import json
import pathlib
import threading
import time
import uuid
from typing import Any, Iterator

from swiftjax import tokenizer as tok_lib
from swiftjax.serve.engine import Engine
from swiftjax.serve.engine import Request
from swiftjax.serve.engine import SamplingParams
from swiftjax.serve.engine import ServeError

AGENT_TEMPLATES = ("hermes", "react", "toolbench")
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
          "tool": "tool", "function": "tool"}
# Fields whose non-default values would change the answer in ways this server does not do.
_UNSUPPORTED = {"logprobs": (None, False), "top_logprobs": (None, 0),
                "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0),
                "suffix": (None, ""), "best_of": (None, 1), "logit_bias": (None, {})}


@dataclasses.dataclass(frozen=True)
class ApiConfig:
  """What the API accepts.

  Attributes:
    model_name: the one model id served (`/v1/models`; requests must name it).
    api_key: if set, every `/v1` request needs `Authorization: Bearer <api_key>`.
    max_request_bytes: largest request body.
    max_tokens: largest `max_tokens` a request may ask for (and the default, capped by the
      context left after the prompt).
    max_n: largest `n` (choices per request).
    agent_template: how tools are written into prompts (`AGENT_TEMPLATES`), or None for the
      tokenizer's chat template.
    timeout_s: per-request deadline (None: the engine's).
  """
  model_name: str
  api_key: str | None = None
  max_request_bytes: int = 1 << 20
  max_tokens: int = 1024
  max_n: int = 8
  agent_template: str | None = "hermes"
  timeout_s: float | None = None


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
  return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _bad(message: str, param: str | None = None, code: str | None = None) -> ServeError:
  e = ServeError(message, 400)
  e.param, e.code = param, code
  return e


def _field(body: dict, name: str, kind, default=None, *, low=None, high=None):
  """`body[name]` checked against a type and range; absent or null gives `default`."""
  value = body.get(name)
  if value is None:
    return default
  if kind is float and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
    raise _bad(f"{name} must be of type {kind.__name__}, got {json.dumps(value)[:60]}", name)
  if (low is not None and value < low) or (high is not None and value > high):
    raise _bad(f"{name} must be in [{low}, {high}], got {value}", name)
  return value


def _text_content(content: Any, where: str) -> str:
  """A message content (string, null, or text parts) as one string."""
  if content is None or isinstance(content, str):
    return content or ""
  if not isinstance(content, list):
    raise _bad(f"{where}.content must be a string or a list of parts", "messages")
  texts = []
  for i, part in enumerate(content):
    if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(
        part.get("text"), str):
      raise _bad(f"{where}.content[{i}]: only text parts are supported by this model",
                 "messages")
    texts.append(part["text"])
  return "".join(texts)


class OpenAIApi:
  """The protocol: request bodies in, response bodies (or chunk iterators) out.

  Args:
    engine: a started `Engine`.
    tokenizer: the model's tokenizer (chat template, encode/decode).
    config: what the API accepts.
  """

  def __init__(self, engine: Engine, tokenizer: Any, config: ApiConfig):
    if config.agent_template not in AGENT_TEMPLATES + (None,):
      raise ServeError(f"agent_template {config.agent_template!r} is not one of "
                       f"{', '.join(AGENT_TEMPLATES)} or None")
    self.engine = engine
    self.tokenizer = tokenizer
    self.config = config
    self.created = int(time.time())

  def models(self) -> dict:
    return {"object": "list", "data": [self.model_card()]}

  def model_card(self) -> dict:
    return {"id": self.config.model_name, "object": "model", "created": self.created,
            "owned_by": "swiftjax", "max_model_len": self.engine.max_seq_len}

  # ------------------------------------------------------------------------------------------
  # Request parsing.

  def _check_common(self, body: dict) -> None:
    if not isinstance(body, dict):
      raise _bad("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
      raise _bad("you must provide a model parameter", "model")
    if model != self.config.model_name:
      raise _bad(f"the model {model!r} does not exist; this server serves "
                 f"{self.config.model_name!r}", "model", "model_not_found")
    for name, defaults in _UNSUPPORTED.items():
      if name in body and body[name] not in defaults:
        raise _bad(f"{name} is not supported by this server", name)
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
      raise _bad("only response_format {\"type\": \"text\"} is supported", "response_format")

  def _sampling(self, body: dict, prompt_len: int, extra_stop: tuple[str, ...] = ()
                ) -> SamplingParams:
    room = self.engine.max_seq_len - prompt_len
    if room < 1:
      raise _bad(f"this model's maximum context length is {self.engine.max_seq_len} tokens; "
                 f"the prompt has {prompt_len}", "messages", "context_length_exceeded")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    max_tokens = _field({name: max_tokens}, name, int, None, low=1, high=self.config.max_tokens)
    if max_tokens is None:
      max_tokens = min(self.config.max_tokens, room)
    elif max_tokens > room:
      raise _bad(f"this model's maximum context length is {self.engine.max_seq_len} tokens, "
                 f"but {prompt_len} prompt tokens + {max_tokens} max_tokens were requested",
                 name, "context_length_exceeded")
    stop = body.get("stop")
    if isinstance(stop, str):
      stop = [stop]
    if stop is not None and (not isinstance(stop, list) or len(stop) > 16 or
                             not all(isinstance(s, str) and s for s in stop)):
      raise _bad("stop must be a non-empty string or a list of at most 16 of them", "stop")
    seed = _field(body, "seed", int)
    return SamplingParams(
        max_tokens=max_tokens, temperature=_field(body, "temperature", float, 1.0, low=0, high=2),
        top_p=max(_field(body, "top_p", float, 1.0, low=0, high=1), 1e-9),  # 0: the arg-max
        top_k=max(_field(body, "top_k", int, 0, low=-1), 0),  # -1 (vLLM) or 0: off
        repetition_penalty=_field(body, "repetition_penalty", float, 1.0, low=0.01, high=10),
        stop=tuple(stop or ()) + extra_stop,
        seed=None if seed is None else seed % (1 << 32))

  def _n_and_stream(self, body: dict) -> tuple[int, bool, bool]:
    n = _field(body, "n", int, 1, low=1, high=self.config.max_n)
    stream = _field(body, "stream", bool, False)
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
      raise _bad("stream_options must be an object", "stream_options")
    return n, stream, bool(options.get("include_usage"))

  def render_chat(self, body: dict) -> tuple[str, str | None]:
    """The prompt text of a chat request, and the agent template used for its tools (or None
    when it has none; "" when they went to the tokenizer's template)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
      raise _bad("messages must be a non-empty list", "messages")
    plain = []
    for i, m in enumerate(messages):
      if not isinstance(m, dict) or _ROLES.get(m.get("role")) is None:
        raise _bad(f"messages[{i}] must be an object with a role among "
                   f"{', '.join(sorted(_ROLES))}", "messages")
      out = {"role": _ROLES[m["role"]], "content": _text_content(m.get("content"),
                                                                  f"messages[{i}]")}
      if m.get("tool_calls"):
        out["tool_calls"] = m["tool_calls"]
      plain.append(out)
    tools = body.get("tools") or None
    if tools is not None and not isinstance(tools, list):
      raise _bad("tools must be a list", "tools")
    if body.get("tool_choice") == "none":
      tools = None
    agentic = tools or any(m["role"] == "tool" or m.get("tool_calls") for m in plain)
    if not agentic:
      return tok_lib.render_chat(self.tokenizer, plain), None
    template = self.config.agent_template
    try:
      if template is None:
        text = self.tokenizer.apply_chat_template(plain, tools=tools, tokenize=False,
                                                  add_generation_prompt=True)
        return text, ""
      from swiftjax.agent import converters  # pylint: disable=g-import-not-at-top
      from swiftjax.agent import templates  # pylint: disable=g-import-not-at-top
      row = converters.from_hermes({"messages": plain, "tools": tools})
      chat = templates.to_chat(row["messages"], row["tools"], template)
    except (ValueError, TypeError, KeyError) as e:
      raise _bad(f"cannot render the tools and messages: {e}", "messages") from None
    return tok_lib.render_chat(self.tokenizer, [{"role": m["role"], "content": m["content"]}
                                                for m in chat]), template

  def _prompt_ids(self, prompt: Any, param: str) -> list[int]:
    if isinstance(prompt, str):
      ids = tok_lib.encode(self.tokenizer, prompt)
    elif isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool)
                                          for t in prompt):
      vocab = self.engine.cfg.vocab_size
      if any(not 0 <= t < vocab for t in prompt):
        raise _bad(f"{param}: token ids must be in [0, {vocab})", param)
      ids = list(prompt)
    else:
      raise _bad(f"{param} must be a string, a list of strings or a list of token ids", param)
    if not ids:
      raise _bad(f"{param} is empty", param)
    return ids

  # ------------------------------------------------------------------------------------------
  # Endpoints.

  def chat_completions(self, body: dict) -> dict | Iterator[dict]:
    """A chat completion (a dict) or, with `stream`, an iterator of chunk dicts."""
    self._check_common(body)
    n, stream, usage = self._n_and_stream(body)
    text, template = self.render_chat(body)
    ids = self._prompt_ids(text, "messages")
    # A react/toolbench model would go on to invent the tool's answer: stop where it starts.
    extra = ("Observation:",) if template in ("react", "toolbench") else ()
    params = self._sampling(body, len(ids), extra)
    requests = self._submit([(ids, params)] * n)
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()),
            "model": self.config.model_name}
    if stream:
      return self._chat_stream(head, requests, template, usage)
    choices = []
    for i, r in enumerate(requests):
      message, reason = self._message(r.text(), r.finish_reason, template)
      choices.append({"index": i, "message": message, "finish_reason": reason,
                      "logprobs": None})
    return {**head, "object": "chat.completion", "choices": choices,
            "usage": self._usage(requests)}

  def completions(self, body: dict) -> dict | Iterator[dict]:
    """A text completion (a dict) or, with `stream`, an iterator of chunk dicts."""
    self._check_common(body)
    n, stream, usage = self._n_and_stream(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
      prompts = [self._prompt_ids(p, f"prompt[{i}]") for i, p in enumerate(prompt)]
    else:
      prompts = [self._prompt_ids(prompt, "prompt")]
    echo = _field(body, "echo", bool, False)
    jobs = [(ids, self._sampling(body, len(ids))) for ids in prompts for _ in range(n)]
    requests = self._submit(jobs)
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()),
            "model": self.config.model_name}
    prefixes = [self.tokenizer.decode(r.prompt_ids) if echo else "" for r in requests]
    if stream:
      return self._completion_stream(head, requests, prefixes, usage)
    choices = [{"index": i, "text": prefix + r.text(), "finish_reason": r.finish_reason,
                "logprobs": None} for i, (r, prefix) in enumerate(zip(requests, prefixes))]
    return {**head, "object": "text_completion", "choices": choices,
            "usage": self._usage(requests)}

  def _submit(self, jobs) -> list[Request]:
    return self.engine.submit_many(jobs, self.config.timeout_s)

  @staticmethod
  def _usage(requests: list[Request]) -> dict:
    prompt = sum(len(r.prompt_ids) for r in requests)
    completion = sum(len(r.output_ids) for r in requests)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}

  def _message(self, text: str, reason: str, template: str | None) -> tuple[dict, str]:
    """The assistant message of an answer: tool calls parsed out when tools were offered."""
    if template is None:
      return {"role": "assistant", "content": text}, reason
    from swiftjax.agent import actions  # pylint: disable=g-import-not-at-top
    action = actions.parse(text, template or None)
    if action.plan == "call" and action.name:
      call = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
              "function": {"name": action.name, "arguments": action.arguments or "{}"}}
      return ({"role": "assistant", "content": action.thought or None, "tool_calls": [call]},
              "tool_calls")
    if template in ("react", "toolbench") and action.final_answer is not None:
      return {"role": "assistant", "content": action.final_answer}, reason
    return {"role": "assistant", "content": text}, reason

  def _chat_stream(self, head: dict, requests: list[Request], template: str | None,
                   usage: bool) -> Iterator[dict]:
    chunk = {**head, "object": "chat.completion.chunk"}

    def one(index, delta, reason=None):
      return {**chunk, "choices": [{"index": index, "delta": delta, "finish_reason": reason,
                                    "logprobs": None}]}

    try:
      for i, r in enumerate(requests):
        yield one(i, {"role": "assistant", "content": ""})
        if template is None:
          for piece in r.events():
            yield one(i, {"content": piece})
          yield one(i, {}, r.finish_reason)
        else:
          message, reason = self._message(r.text(), r.finish_reason, template)
          delta = {k: v for k, v in message.items() if k != "role" and v is not None}
          if "tool_calls" in delta:
            delta["tool_calls"] = [dict(c, index=j) for j, c in enumerate(delta["tool_calls"])]
          yield one(i, delta)
          yield one(i, {}, reason)
      if usage:
        yield {**chunk, "choices": [], "usage": self._usage(requests)}
    finally:
      for r in requests:
        r.cancel()  # no-op once finished; frees the slot if the client went away

  def _completion_stream(self, head: dict, requests: list[Request], prefixes: list[str],
                         usage: bool) -> Iterator[dict]:
    chunk = {**head, "object": "text_completion"}

    def one(index, text, reason=None):
      return {**chunk, "choices": [{"index": index, "text": text, "finish_reason": reason,
                                    "logprobs": None}]}

    try:
      for i, (r, prefix) in enumerate(zip(requests, prefixes)):
        if prefix:
          yield one(i, prefix)
        for piece in r.events():
          yield one(i, piece)
        yield one(i, "", r.finish_reason)
      if usage:
        yield {**chunk, "choices": [], "usage": self._usage(requests)}
    finally:
      for r in requests:
        r.cancel()


def make_http_server(api: OpenAIApi, host: str = "127.0.0.1",
                     port: int = 8000) -> http.server.ThreadingHTTPServer:
  """A threading HTTP server for `api` (call `.serve_forever()`; port 0 picks a free port)."""

  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # see the module docstring
    server_version = "swiftjax"

    def log_message(self, fmt, *args):
      del fmt, args

    def _send(self, status: int, body: dict) -> None:
      data = json.dumps(body).encode()
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      if status == 429:
        self.send_header("Retry-After", "1")
      if self.close_connection:
        self.send_header("Connection", "close")
      self.end_headers()
      self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str = "invalid_request_error",
               param: str | None = None, code: str | None = None) -> None:
      self._send(status, error_body(message, kind, param, code))

    def _authorized(self) -> bool:
      key = api.config.api_key
      if not key:
        return True
      given = self.headers.get("Authorization", "")
      token = given[7:].strip() if given[:7].lower() == "bearer " else ""
      if hmac.compare_digest(token.encode(), key.encode()):
        return True
      self._error(401, "Incorrect API key provided.", "invalid_request_error",
                  code="invalid_api_key")
      return False

    def do_GET(self):  # pylint: disable=invalid-name
      path = self.path.split("?", 1)[0].rstrip("/")
      if path in ("/health", "/healthz"):
        self._send(200, {"status": "ok", **api.engine.stats()})
        return
      if not self._authorized():
        return
      if path == "/v1/models":
        self._send(200, api.models())
      elif path == f"/v1/models/{api.config.model_name}":
        self._send(200, api.model_card())
      elif path.startswith("/v1/models/"):
        self._error(404, f"the model {path[len('/v1/models/'):]!r} does not exist",
                    code="model_not_found")
      else:
        self._error(404, f"no such path {self.path}")

    def do_POST(self):  # pylint: disable=invalid-name
      path = self.path.split("?", 1)[0].rstrip("/")
      endpoint = {"/v1/chat/completions": api.chat_completions,
                  "/v1/completions": api.completions}.get(path)
      length = self.headers.get("Content-Length")
      if length is None or not length.isdigit():
        self.close_connection = True
        self._error(411, "a Content-Length header is required")
        return
      if int(length) > api.config.max_request_bytes:
        self.close_connection = True  # the unread body would corrupt the next request
        self._error(413, f"request body of {length} bytes exceeds the limit of "
                    f"{api.config.max_request_bytes}")
        return
      raw = self.rfile.read(int(length))
      if not self._authorized():
        return
      if endpoint is None:
        self._error(404, f"no such path {self.path}")
        return
      try:
        body = json.loads(raw)
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        self._error(400, f"invalid JSON in the request body: {e}")
        return
      try:
        result = endpoint(body)
      except ServeError as e:
        self._error(e.status, str(e), e.kind, getattr(e, "param", None),
                    getattr(e, "code", None))
        return
      if isinstance(result, dict):
        self._send(200, result)
      else:
        self._stream(result)

    def _stream(self, chunks: Iterator[dict]) -> None:
      """Server-sent events over chunked transfer encoding; `[DONE]` ends the stream."""
      try:
        first = next(chunks)
      except ServeError as e:
        self._error(e.status, str(e), e.kind)
        return
      self.send_response(200)
      self.send_header("Content-Type", "text/event-stream")
      self.send_header("Cache-Control", "no-cache")
      self.send_header("Transfer-Encoding", "chunked")
      self.end_headers()

      def write(text: str) -> None:
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

      try:
        write(f"data: {json.dumps(first)}\n\n")
        try:
          for chunk in chunks:
            write(f"data: {json.dumps(chunk)}\n\n")
        except ServeError as e:
          write(f"data: {json.dumps(error_body(str(e), e.kind))}\n\n")
        write("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
      except (BrokenPipeError, ConnectionResetError):
        self.close_connection = True
      finally:
        chunks.close()  # cancels the requests if the client went away

  httpd = _HTTPServer((host, port), Handler)
  httpd.daemon_threads = True
  return httpd


class _HTTPServer(http.server.ThreadingHTTPServer):
  # socketserver listens with a backlog of 5: a burst of new connections (16 clients starting
  # at once while the accepting thread waits for the GIL) overflows it and clients see
  # "connection reset by peer".
  request_queue_size = 256


class Server:
  """An engine and its HTTP server, running in background threads.

  Args:
    model: a `swiftjax.infer.LoadedModel`.
    engine_config: slots and limits.
    api_config: what the API accepts.
    host, port: where to listen (port 0 picks a free one; see `url`).
    warmup: compile the common shapes (one short request) before listening.
    precompile_len: before listening, compile what requests of up to this many tokens run
      (`Engine.precompile`; 0: compile on first use, stalling the requests live then).
  """

  def __init__(self, model: Any, engine_config, api_config: ApiConfig,
               host: str = "127.0.0.1", port: int = 8000, warmup: bool = True,
               precompile_len: int = 0):
    self.engine = Engine(model, engine_config)
    # (programs compiled, seconds) by `precompile_len`, for the launcher to report.
    self.precompiled: tuple[int, float] | None = None
    if precompile_len:
      t0 = time.monotonic()
      count = self.engine.precompile(precompile_len)
      self.precompiled = (count, time.monotonic() - t0)
    self.engine.start()
    try:
      if warmup:
        self.engine.generate(tok_lib.encode(model.tokenizer, tok_lib.render_chat(
            model.tokenizer, "Hi")), SamplingParams(max_tokens=2, temperature=0))
      self.api = OpenAIApi(self.engine, model.tokenizer, api_config)
      try:
        self.httpd = make_http_server(self.api, host, port)
      except OSError as e:
        raise ServeError(f"cannot listen on {host}:{port}: {e}") from None
    except BaseException:
      self.engine.stop()
      raise
    self.host, self.port = self.httpd.server_address[:2]
    self._thread = threading.Thread(target=self.httpd.serve_forever, name="swiftjax-http",
                                    daemon=True)
    self._thread.start()

  @property
  def url(self) -> str:
    """Base URL of the API (`http://host:port/v1`), as OpenAI clients take it."""
    return f"http://{self.host}:{self.port}/v1"

  def close(self) -> None:
    """Stops listening, then stops the engine (requests in flight fail with 503)."""
    self.httpd.shutdown()
    self.engine.stop()
    self.httpd.server_close()
    self._thread.join()


def default_model_name(path: Any) -> str:
  """The id a model is served under: its file or directory name less `.gguf`."""
  name = pathlib.PurePath(str(path)).name
  return name[:-len(".gguf")] if name.endswith(".gguf") else name
