"""Request shapes for the messages API. Field constraints give a 422 naming the field; whether
a template's sources use only its declared variables is checked by the service."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Source = Annotated[str, Field(max_length=4000)]
VariableName = Annotated[str, Field(min_length=1, max_length=40)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class TemplateUpdate(Strict):
    description: str | None = Field(default=None, max_length=200)
    variables: list[VariableName] | None = Field(default=None, max_length=40)
    subject_zh: Source | None = None
    subject_en: Source | None = None
    body_zh: Source | None = None
    body_en: Source | None = None
    wechat_template_id: str | None = Field(default=None, max_length=64)
    wechat_fields: dict[str, Source] | None = Field(default=None, max_length=20)
    # 'subscribe': a WeChat subscription message (subscribeMessage.send) opening wechat_page.
    wechat_kind: Literal["template", "subscribe"] | None = None
    wechat_page: str | None = Field(default=None, max_length=200)
    sms_template_id: str | None = Field(default=None, max_length=64)


class TemplateIn(TemplateUpdate):
    code: str = Field(min_length=2, max_length=64)
    variables: list[VariableName] = Field(default_factory=list, max_length=40)
    body_zh: Source


class InboundSms(BaseModel):
    """What the SMS gateway posts when a customer replies (signed like Patron's requests)."""

    model_config = ConfigDict(extra="ignore")
    from_: str = Field(alias="from", min_length=3, max_length=32)
    text: str = Field(max_length=1000)
