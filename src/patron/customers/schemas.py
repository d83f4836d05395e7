"""Request shapes for the customer API (responses are the read functions' dictionaries)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from patron.customers.model import LanguageError, clean_language
from patron.i18n import LANGUAGES

FieldType = Literal["text", "number", "date", "choice", "multi_choice"]


def _language(raw: str) -> str | None:
    try:
        return clean_language(raw)
    except LanguageError as exc:
        raise PydanticCustomError("literal_error", "Input should be one of {expected}",
                                  {"expected": ", ".join(LANGUAGES)}) from exc


# A customer's message language in a request (an order's customer, an enrolment): one of
# Patron's languages, a tag with a region taken as its language, "" for none.
LanguageCode = Annotated[str, Field(max_length=16), AfterValidator(_language)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CustomerUpdate(Strict):
    """A partial edit: only the fields sent change; ``null`` clears a field. Custom field
    values are checked against their definitions by the service."""

    name: str | None = Field(default=None, max_length=120)
    gender: Literal["F", "M", "U"] | None = None
    birthday: dt.date | None = None
    email: str | None = Field(default=None, max_length=200)
    # One of Patron's languages (zh, en; zh-CN and en-US are taken as zh and en), checked by
    # the service so that a refusal names the field; null: the default language.
    language: str | None = Field(default=None, max_length=16)
    custom_fields: dict[str, Any] | None = None


class RevealIn(Strict):
    # phone | email | name | birthday | identity:<id>
    field: str = Field(min_length=1, max_length=40)


class CustomFieldCreate(Strict):
    key: str = Field(min_length=1, max_length=64)
    label_zh: str = Field(min_length=1, max_length=120)
    label_en: str = Field(min_length=1, max_length=120)
    type: FieldType
    options: list[str] = Field(default_factory=list, max_length=100)
    required: bool = False


class CustomFieldUpdate(Strict):
    label_zh: str | None = Field(default=None, min_length=1, max_length=120)
    label_en: str | None = Field(default=None, min_length=1, max_length=120)
    options: list[str] | None = Field(default=None, max_length=100)
    required: bool | None = None
    active: bool | None = None
