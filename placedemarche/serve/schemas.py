"""The service's request and answer models (pydantic): the OpenAPI schema and the 422 messages
naming a field come from them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Decision = Literal["auto", "review"]
Modality = Literal["text+image", "text", "image"]


class ProductIn(BaseModel):
    """One product as a seller posts it: a name and/or description, and/or a photo (base64 in
    JSON, a file in a multipart form). At least a text or a photo is needed."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"id": "p-1", "name": "Cotton bath towel", "description": "Soft, 500 GSM, blue"}]})

    id: str | None = Field(default=None, max_length=200,
                           description="Your id of the product (echoed back; one is made up when absent)")
    name: str = Field(default="", description="Product name")
    description: str = Field(default="", description="Product description")
    photo: str | None = Field(default=None, description="The photo's file (JPEG, PNG, WebP...) encoded in base64")


class ProductForm(BaseModel):
    """The multipart form of ``POST /v1/categorise`` (documentation only: parsed by the endpoint)."""

    id: str | None = None
    name: str = ""
    description: str = ""
    photo: bytes | None = Field(default=None, json_schema_extra={"format": "binary"})


class Scored(BaseModel):
    category: str
    probability: float


class CategoryAnswer(BaseModel):
    """The category suggested for one product."""

    id: str = Field(description="The product's id (yours, or one made up)")
    category: str = Field(description="The most probable category")
    probability: float = Field(description="Its probability")
    top: list[Scored] = Field(description="The most probable categories, best first")
    path: str = Field(default="", description="The category path down to the deepest level whose probability "
                                           "reaches that level's threshold ('Home Furnishing > Bed Linen'); "
                                           "empty when not even the first level is sure")
    level: int = Field(default=0, description="The level of that path (0: none)")
    modality: Modality = Field(description="What the answer was made from")
    decision: Decision = Field(description="auto: accept without a person (probability at or above the "
                                           "threshold); review: a person should check it")
    threshold: float | None = Field(description="The probability the decision compared with (None: the model "
                                                "has no measured threshold, everything goes to review)")
    model_id: str = Field(description="The model that answered")
    seconds: float = Field(description="Time from arrival to answer, in seconds")
    notes: list[str] = Field(default_factory=list,
                             description="What was missing or cut (e.g. 'no photo: answered from the text')")


class BatchAnswer(BaseModel):
    answers: list[CategoryAnswer]
    seconds: float


class DecisionInfo(BaseModel):
    group: str | None = None
    target_precision: float | None = None
    threshold: float | None = None
    coverage: float | None = None
    precision: float | None = None
    thresholds: dict[str, float] = Field(default_factory=dict,
                                         description="Threshold per modality group the answers use")
    summary: str


class ModelInfo(BaseModel):
    model_id: str
    directory: str
    categories: list[str]
    modalities: list[str]
    extractors: dict[str, dict]
    head: str
    group: str = Field(description="The modality group that answers a product having every modality")
    cv_accuracy: float | None = Field(description="Cross-validated accuracy of that group (None: trained without folds)")
    decision: DecisionInfo
    trained: str | None
    checksum: str | None = Field(description="sha256 of the model's objects file, as recorded in model.json")
    loaded: str
    feedback: bool = Field(description="Whether POST /v1/feedback records anything (pm serve --db)")


class FeedbackIn(BaseModel):
    """The category a person finally chose for a product (blank ids and categories are refused)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    product_id: str = Field(min_length=1, max_length=200)
    category: str = Field(min_length=1, max_length=500, description="The category a person chose")
    model_id: str | None = Field(default=None, max_length=500)
    name: str | None = None
    description: str | None = None
    photo_ref: str | None = Field(default=None, max_length=2000,
                                  description="Your reference to the photo (stored as text, never fetched)")


class FeedbackOut(BaseModel):
    recorded: bool
    product_id: str
    category: str
    known_category: bool = Field(description="Whether the category is one the model knows")


class ReloadOut(BaseModel):
    reloaded: bool
    model_id: str = Field(description="The model answering now")
    previous_model_id: str
    message: str


class Health(BaseModel):
    status: str
    model_id: str | None = None
    detail: str | None = None


class Problem(BaseModel):
    """An error that is not a field's: ``detail`` says what went wrong and what to do."""

    detail: str


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class FieldProblems(BaseModel):
    """A request whose fields are wrong: each error names its field (``loc``)."""

    detail: list[FieldError]
