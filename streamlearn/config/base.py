"""Shared building blocks of the configuration models."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PositiveFloat = Annotated[float, Field(gt=0)]
Probability = Annotated[float, Field(ge=0, le=1)]


class _Strict(BaseModel):
    # NaN and infinity are refused everywhere: every float setting means a finite number.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)
