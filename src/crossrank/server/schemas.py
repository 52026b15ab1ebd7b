"""Request and response bodies of every route, as the real clients send and expect them.

Requests ignore keys no API defines and accept ``null`` for every optional field (SDKs send
``"top_n": null`` and fields of newer API versions), so a client of a newer or older API version
still works; numbers and booleans are strict (``"top_n": "3"`` or ``true`` is a 422, as the real
APIs' typed parsers refuse them, never read as 3 or 1); every field an API does define is declared
here and honoured (or refused with that API's error) by the route. Responses are written by hand
in :mod:`crossrank.server.app` (one JSON encode, no second validation pass); the response models
here document them in ``/docs`` and the OpenAPI schema, which the fuzz tests check the responses
against.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------------------------------------- requests
class DocumentObject(BaseModel):
    """A document as an object: Cohere v1 and Jina send ``{"text": ...}`` (other keys are kept and echoed)."""

    model_config = ConfigDict(extra="allow")
    text: str | None = None


def _instruction() -> Any:
    return Field(
        default=None,
        description="task instruction for rerankers whose prompt has an instruction slot (Qwen3-Reranker, "
        "mxbai-rerank-v2); refused (400) for models without one",
    )


class RerankV1Request(_Request):
    """Cohere v1 ``/v1/rerank`` (also Jina's and vLLM's ``/v1/rerank``)."""

    query: str
    documents: list[str | DocumentObject]
    model: str | None = None
    top_n: StrictInt | None = Field(default=None, ge=1)
    return_documents: StrictBool | None = None
    rank_fields: list[str] | None = Field(
        default=None, description="object documents: score these fields, in this order, as 'key: value' lines"
    )
    max_chunks_per_doc: StrictInt | None = Field(
        default=None, ge=1, description="windows per document with long_documents=windows (one chunk otherwise)"
    )
    instruction: str | None = _instruction()


class RerankV2Request(_Request):
    """Cohere v2 ``/v2/rerank``."""

    query: str
    documents: list[str]
    model: str | None = None
    top_n: StrictInt | None = Field(default=None, ge=1)
    max_tokens_per_doc: StrictInt | None = Field(
        default=None, ge=1, description="cut each document to this many tokens"
    )
    priority: StrictInt | None = None
    return_documents: StrictBool | None = None
    instruction: str | None = _instruction()


class RerankRequest(_Request):
    """``/rerank``: Hugging Face TEI's body (``texts``) or Infinity's (``documents``).

    TEI: ``query``, ``texts``, ``raw_scores``, ``return_text``, ``truncate``, ``truncation_direction``.
    Infinity: ``query``, ``documents``, ``return_documents``, ``raw_scores``, ``model``, ``top_n``.
    ``truncate: false`` makes an input longer than the model takes a 413 (TEI's answer);
    ``truncation_direction: Left`` keeps a long text's end; both apply to either body.
    """

    query: str
    texts: list[str] | None = None
    documents: list[str] | None = None
    raw_scores: StrictBool | None = None
    return_text: StrictBool | None = None
    return_documents: StrictBool | None = None
    truncate: StrictBool | None = None
    truncation_direction: str | None = Field(default=None, description="'Right' (default) or 'Left'")
    model: str | None = None
    top_n: StrictInt | None = Field(default=None, ge=1)
    instruction: str | None = _instruction()


# ---------------------------------------------------------------------------------------------- responses
class ResultDocument(_Response):
    text: str


class CohereResult(_Response):
    index: int
    relevance_score: float = Field(description="probability of relevance in [0, 1]: the sigmoid of the raw score")
    document: ResultDocument | None = Field(default=None, description="only when return_documents is true")


class ApiVersion(_Response):
    version: str


class BilledUnits(_Response):
    search_units: float | None = None


class Tokens(_Response):
    input_tokens: int | None = Field(default=None, description="tokens of every model input scored")
    output_tokens: int | None = None


class Meta(_Response):
    api_version: ApiVersion | None = None
    billed_units: BilledUnits | None = None
    tokens: Tokens | None = None
    warnings: list[str] | None = None


class Usage(_Response):
    """Jina's, vLLM's and Infinity's usage: the tokens of every model input scored (after truncation)."""

    total_tokens: int
    prompt_tokens: int | None = None


class RerankV1Response(_Response):
    id: str
    model: str
    results: list[CohereResult]
    meta: Meta
    usage: Usage


class CohereV2Result(_Response):
    index: int
    relevance_score: float
    document: ResultDocument | None = Field(default=None, description="only when return_documents is true")


class RerankV2Response(_Response):
    id: str
    results: list[CohereV2Result]
    meta: Meta


class TEIResult(_Response):
    index: int
    score: float = Field(description="sigmoid of the raw score, or the raw score with raw_scores=true")
    text: str | None = None


class InfinityResult(_Response):
    index: int
    relevance_score: float
    document: str | None = None


class InfinityResponse(_Response):
    object: str
    results: list[InfinityResult]
    model: str
    usage: Usage
    id: str
    created: int


class CohereError(_Response):
    message: str


class TEIError(_Response):
    error: str
    error_type: str


class Health(_Response):
    status: str
    error: str | None = None


class Info(_Response):
    """crossrank's fields, and Hugging Face TEI's ``Info`` fields (``model_id`` ... ``docker_label``)."""

    model_id: str
    model_sha: str | None = None
    model_dtype: str
    model_type: dict[str, Any]
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None = None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    sha: str | None = None
    docker_label: str | None = None
    model: str
    served_model_names: list[str]
    kind: str
    backend: str
    max_length: int | None
    score_scale: str
    long_documents: str
    limits: dict[str, Any]
    version: str
