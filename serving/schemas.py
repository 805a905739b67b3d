"""Request and response models of the HTTP API.

The request models are BentoML IO descriptors (pydantic models), so that
BentoML uses them as they are. They are built for the loaded bundle
(:func:`request_models`): its ``serving`` section sets the limits and the default policy. Every input model forbids unknown fields and sets ``hide_input_in_errors`` so
that neither an error response nor a logged validation error ever contains the
text of a message.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NamedTuple

from bentoml import IODescriptor
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from serving.scorer import CONTENT_PATTERN, is_blank


def _not_blank(text: str) -> str:
    if is_blank(text):
        raise PydanticCustomError("empty_text", "text is empty or only whitespace, control or invisible characters")
    return text


class _Input(BaseModel):
    """Every request model: unknown fields are refused, and no error carries the input.

    Unknown keys are refused before pydantic's own ``extra="forbid"`` check, whose error
    would name the key in ``loc``: a client-chosen key must appear in no response and no
    log line (it may carry a newline and a forged log prefix)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys_only(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sum(key not in cls.model_fields for key in data)
            if unknown:
                raise PydanticCustomError("extra_forbidden", "{count} unknown field(s); allowed: {allowed}",
                                          {"count": unknown, "allowed": ", ".join(cls.model_fields)})
        return data


class RequestModels(NamedTuple):
    """The request models of one bundle (its limits and default policy)."""

    Message: type[BaseModel]
    ScoreRequest: type[IODescriptor]
    ProbaRequest: type[IODescriptor]


def request_models(limits: dict[str, int], policies: tuple[str, ...], default_policy: str) -> RequestModels:
    """Request models for a bundle's ``serving`` section (``Bundle.limits``, the ``api``
    default policy) and its policies: the bundle is the one place those facts live."""
    max_messages, max_text_chars = limits["max_messages"], limits["max_text_chars"]
    #: One of the bundle's policies (an ``enum`` in the OpenAPI document).
    Policy = Literal[tuple(policies)]  # type: ignore[valid-type]
    #: One message text: 1 to ``max_text_chars`` characters, not blank (``is_blank``).
    #: The OpenAPI document states the blank check as a ``pattern`` (the validator is the check itself).
    Text = Annotated[str, Field(min_length=1, max_length=max_text_chars, json_schema_extra={"pattern": CONTENT_PATTERN}),
                     AfterValidator(_not_blank)]

    class Message(_Input):
        """A message to score; ``id`` is echoed back so results can be matched."""

        id: str = Field(min_length=1, max_length=limits["max_id_chars"])
        text: Text

    def messages_accept_strings(schema: dict[str, Any]) -> None:
        """Document that ``messages`` items may be bare strings.

        Validation turns strings into objects first. The string branch comes first
        because BentoML flattens ``anyOf`` to its first branch in ``/schema.json``,
        and ``bentoml.SyncHTTPClient`` shapes its payload by that schema: under an
        object schema it would turn a string into ``{}``; under a string schema it
        passes strings and objects through unchanged.
        """
        schema["items"] = {"anyOf": [TypeAdapter(Text).json_schema(), schema["items"]]}

    class ScoreRequest(IODescriptor, _Input):
        """``{"messages": [{"id", "text"}, …], "policy": "moderation"}``.

        A bare list of strings is accepted as the whole body or as ``messages``;
        such messages get their position as id (``"0"``, ``"1"``, …).
        """

        messages: list[Message] = Field(min_length=1, max_length=max_messages,
                                        json_schema_extra=messages_accept_strings)
        policy: Policy = default_policy

        @model_validator(mode="before")
        @classmethod
        def _bare_list(cls, data: Any) -> Any:
            return {"messages": data} if isinstance(data, list) else data

        @field_validator("messages", mode="before")
        @classmethod
        def _strings_to_messages(cls, value: Any) -> Any:
            if isinstance(value, list):
                return [{"id": str(i), "text": m} if isinstance(m, str) else m for i, m in enumerate(value)]
            return value

    class ProbaRequest(IODescriptor, _Input):
        """``{"texts": [...]}``: the batchable endpoint that adaptive batching merges."""

        texts: list[Text] = Field(min_length=1, max_length=max_messages)

    return RequestModels(Message, ScoreRequest, ProbaRequest)


class MessageScore(BaseModel):
    """Scores of one message: calibrated probabilities, flags under the policy, priority."""

    id: str
    scores: dict[str, float]
    flags: dict[str, bool]
    priority: str


class ScoreResponse(BaseModel):
    """The answer of ``POST /score``, results in request order."""

    model: str
    model_version: str
    #: ``sha256:…`` of the bundle's manifest (``GET /model → digest``): pins exactly which
    #: bundle, thresholds included, answered; an edited bundle has another digest.
    model_digest: str
    policy: str
    results: list[MessageScore]


class PolicyThreshold(BaseModel):
    """One label's threshold under a policy and what it was fitted for."""

    threshold: float
    objective: str | None = None
    precision: float | None = None
    recall: float | None = None
    precision_at_prevalence: float | None = None


class ModelInfo(BaseModel):
    """The answer of ``GET /model``: the loaded bundle's identity, policies, limits and quality."""

    name: str
    version: str
    digest: str
    created: str | None
    git_commit: str | None
    labels: list[str]
    languages: list[str]
    policies: dict[str, dict[str, PolicyThreshold]]
    default_policy: dict[str, str]
    priority: dict[str, Any]
    calibration_method: str | None
    prevalence: dict[str, float | None]
    max_length_tokens: int
    limits: dict[str, int]
    metrics: dict[str, Any]


class ErrorDetail(BaseModel):
    """One reason a request was refused; it never carries the request's text or keys."""

    type: str
    loc: list[str | int]
    msg: str


class RequestError(BaseModel):
    """A 400 answer: a summary and one entry per problem."""

    error: str
    detail: list[ErrorDetail]


class PlainError(BaseModel):
    """Any other refusal (401, 408, 413, 415, 429, 500, 503)."""

    error: str
