"""Service settings read from the environment: request limits, each named in its error."""

import math
import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chainlets.errors import ConfigurationError

__all__ = ["ServiceLimits", "env_number"]


def env_number(environ: Mapping[str, str], name: str, default: float, *,
               minimum: float, maximum: float = math.inf, integer: bool = False) -> float:
    """`environ[name]` as a number in [`minimum`, `maximum`], or `default` when unset or
    empty."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    kind = "a whole number" if integer else "a number"
    try:
        value = float(int(raw)) if integer else float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not minimum <= value <= maximum:
        bounds = f"≥ {minimum:g}" if maximum == math.inf else f"from {minimum:g} to {maximum:g}"
        raise ConfigurationError(
            f"{name}={raw!r} is not {kind} {bounds}: set it to one, or unset it for the "
            f"default ({default:g})")
    return value


class ServiceLimits(BaseModel):
    """Limits on service requests; `from_env` reads each from its `CHAINRUNNER_…` variable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_page_size: int = Field(
        default=100, ge=1,
        description="Largest `limit` of a list operation (CHAINRUNNER_MAX_PAGE_SIZE).")
    default_page_size: int = Field(
        default=20, ge=1,
        description="Page size of a list operation without `limit` "
                    "(CHAINRUNNER_DEFAULT_PAGE_SIZE).")
    max_idempotency_key_chars: int = Field(
        default=255, ge=1,
        description="Longest `idempotency_key` (CHAINRUNNER_MAX_IDEMPOTENCY_KEY_CHARS).")
    max_callback_url_chars: int = Field(
        default=2048, ge=1,
        description="Longest `callback_url` (CHAINRUNNER_MAX_CALLBACK_URL_CHARS).")

    @model_validator(mode="after")
    def _default_fits(self) -> "ServiceLimits":
        if self.default_page_size > self.max_page_size:
            raise ValueError(_page_sizes_clash(self.default_page_size, self.max_page_size))
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "ServiceLimits":
        """The limits set in `environ`, defaults for the rest; ConfigurationError names a bad
        variable."""
        base = cls()

        def read(name: str, default: int) -> int:
            return int(env_number(environ, name, default, minimum=1, integer=True))

        max_page = read("CHAINRUNNER_MAX_PAGE_SIZE", base.max_page_size)
        default_page = read("CHAINRUNNER_DEFAULT_PAGE_SIZE",
                            min(base.default_page_size, max_page))
        if default_page > max_page:
            raise ConfigurationError(_page_sizes_clash(default_page, max_page))
        return cls(
            max_page_size=max_page,
            default_page_size=default_page,
            max_idempotency_key_chars=read("CHAINRUNNER_MAX_IDEMPOTENCY_KEY_CHARS",
                                           base.max_idempotency_key_chars),
            max_callback_url_chars=read("CHAINRUNNER_MAX_CALLBACK_URL_CHARS",
                                        base.max_callback_url_chars))


def _page_sizes_clash(default: int, maximum: int) -> str:
    return (f"the default page size ({default}, CHAINRUNNER_DEFAULT_PAGE_SIZE) exceeds the "
            f"maximum ({maximum}, CHAINRUNNER_MAX_PAGE_SIZE): lower the first or raise the "
            f"second")
