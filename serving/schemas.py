"""Request and response models of the HTTP API.

The request models are BentoML IO descriptors (pydantic models), so that
BentoML uses them as they are. They are built for the loaded bundle
(:func:`request_models`): its ``serving`` section sets the limits and the default policy. Every input model forbids unknown fields and sets ``hide_input_in_errors`` so
that neither an error response nor a logged validation error ever contains the
text of a message.
"""

from __future__ import annotations

from typing import Annotated, Any, NamedTuple

from bentoml import IODescriptor
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from serving.scorer import is_blank


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


def request_models(limits: dict[str, int], default_policy: str) -> RequestModels:
    """Request models for a bundle's ``serving`` section (``Bundle.limits``, the ``api``
    default policy): the bundle is the one place those facts live."""
    max_messages, max_text_chars = limits["max_messages"], limits["max_text_chars"]
    #: One message text: 1 to ``max_text_chars`` characters, not blank (``is_blank``).
    Text = Annotated[str, Field(min_length=1, max_length=max_text_chars), AfterValidator(_not_blank)]

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
        schema["items"] = {"anyOf": [{"type": "string", "minLength": 1, "maxLength": max_text_chars},
                                     schema["items"]]}

    class ScoreRequest(IODescriptor, _Input):
        """``{"messages": [{"id", "text"}, …], "policy": "moderation"}``.

        A bare list of strings is accepted as the whole body or as ``messages``;
        such messages get their position as id (``"0"``, ``"1"``, …).
        """

        messages: list[Message] = Field(min_length=1, max_length=max_messages,
                                        json_schema_extra=messages_accept_strings)
        policy: str = Field(default=default_policy, min_length=1, max_length=64)

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
    policy: str
    results: list[MessageScore]


def unknown_policy_error(policy: str, known: tuple[str, ...]) -> ValidationError:
    """The same 400 a schema violation gets, for a policy the loaded model does not have."""
    detail = InitErrorDetails(
        type=PydanticCustomError("unknown_policy", "unknown policy; this model has {known}",
                                 {"known": ", ".join(known)}),
        loc=("policy",), input=policy)
    return ValidationError.from_exception_data("ScoreRequest", [detail], hide_input=True)
