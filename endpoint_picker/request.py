"""The request model: what the picker knows about one inference request, parsed from an OpenAI-style body.

The ext_proc layer hands over the raw path, headers and body bytes; everything the scheduler needs is read here
once, so plugins never parse JSON themselves. Validation follows the reference EPP: the body must be a JSON
object with a ``model`` and the prompt field its API needs, otherwise the request is answered with 400.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from endpoint_picker.errors import BadRequest

REQUEST_ID_HEADER = "x-request-id"
OBJECTIVE_HEADER = "x-gateway-inference-objective"
FAIRNESS_ID_HEADER = "x-gateway-inference-fairness-id"
MODEL_REWRITE_HEADER = "x-gateway-model-name-rewrite"
DEFAULT_FAIRNESS_ID = "default-flow"


class ApiType(enum.Enum):
    """Which OpenAI-compatible API a request targets, read from the path suffix."""

    COMPLETIONS = "completions"
    CHAT_COMPLETIONS = "chat/completions"
    RESPONSES = "responses"
    CONVERSATIONS = "conversations"
    EMBEDDINGS = "embeddings"


# Order matters: "/chat/completions" must be tested before "/completions".
_SUFFIXES: tuple[tuple[str, ApiType], ...] = (
    ("/conversations", ApiType.CONVERSATIONS),
    ("/responses", ApiType.RESPONSES),
    ("/chat/completions", ApiType.CHAT_COMPLETIONS),
    ("/completions", ApiType.COMPLETIONS),
    ("/embeddings", ApiType.EMBEDDINGS),
)

# The field that carries the prompt for each API, as the reference parser requires it.
_PROMPT_FIELD: dict[ApiType, str] = {
    ApiType.COMPLETIONS: "prompt",
    ApiType.CHAT_COMPLETIONS: "messages",
    ApiType.RESPONSES: "input",
    ApiType.CONVERSATIONS: "items",
    ApiType.EMBEDDINGS: "input",
}


def api_type_for_path(path: str) -> ApiType:
    """Map a request path to its API; unknown paths default to completions like the reference parser."""
    path = path.split("?", 1)[0].rstrip("/")
    for suffix, api in _SUFFIXES:
        if path.endswith(suffix):
            return api
    return ApiType.COMPLETIONS


@dataclass(slots=True)
class InferenceRequest:
    """One request as the director and scheduler see it. Holds no prompt text outside ``body``."""

    request_id: str
    path: str
    headers: Mapping[str, str]
    api: ApiType | None = None
    model: str = ""
    body: dict[str, Any] | None = None
    body_size: int = 0
    stream: bool = False
    objective: str | None = None
    priority: int = 0  # from the InferenceObjective named by the objective header; negative = sheddable
    # The model the server is sent when a rewrite applies ("" = none: ``model`` goes out unchanged), and the body
    # bytes to send instead of the client's.
    target_model: str = ""
    rewritten_body: bytes | None = None
    fairness_id: str = DEFAULT_FAIRNESS_ID
    subset_hint: tuple[str, ...] | None = None
    generated_request_id: bool = field(default=False)

    @property
    def has_body(self) -> bool:
        return self.body is not None

    @property
    def served_model(self) -> str:
        """The model name the model server sees: the rewrite target if there is one, else the client's."""
        return self.target_model or self.model

    @property
    def estimated_input_tokens(self) -> int:
        """A cheap token estimate (about four bytes a token) for in-flight accounting before real counts."""
        return max(1, self.body_size // 4)


def new_request(path: str, headers: Mapping[str, str], subset_hint: tuple[str, ...] | None) -> InferenceRequest:
    """Create the request from its headers; the body, if any, is attached later by :func:`attach_body`."""
    request_id = headers.get(REQUEST_ID_HEADER, "")
    generated = not request_id
    if generated:
        request_id = str(uuid.uuid4())
    return InferenceRequest(
        request_id=request_id,
        path=path,
        headers=headers,
        objective=headers.get(OBJECTIVE_HEADER) or None,
        fairness_id=headers.get(FAIRNESS_ID_HEADER) or DEFAULT_FAIRNESS_ID,
        subset_hint=subset_hint,
        generated_request_id=generated,
    )


def attach_body(request: InferenceRequest, raw: bytes) -> None:
    """Parse and validate an OpenAI body into ``request``; raises :class:`BadRequest` with a client-safe message."""
    request.body_size = len(raw)
    if not raw:
        raise BadRequest("request body is empty")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc.msg} at byte {exc.pos}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    api = api_type_for_path(request.path)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model not found in request body")
    prompt_field = _PROMPT_FIELD[api]
    prompt = body.get(prompt_field)
    if api is ApiType.CHAT_COMPLETIONS:
        if not isinstance(prompt, list) or not prompt:
            raise BadRequest("chat completions request must have at least one message in 'messages'")
    elif prompt is None or prompt == "" or prompt == []:
        raise BadRequest(f"{api.value} request must have '{prompt_field}'")
    request.api = api
    request.model = model
    request.body = body
    request.stream = body.get("stream") is True


def rewrite_model(request: InferenceRequest, target: str) -> None:
    """Send ``request`` to model ``target``: its body's ``model`` is replaced and the body re-serialised once."""
    if request.body is None or not target or target == request.model:
        return
    request.target_model = target
    request.body["model"] = target
    request.rewritten_body = orjson.dumps(request.body)
