"""Settings: one typed object, read once from the environment (or a `.env` file) and validated."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting the orchestrator reads. Secrets stay in `SecretStr` and out of logs."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    redis_url: str = Field("redis://localhost:6379/0", validation_alias="REDIS_URL")
    mongo_url: str = Field("mongodb://localhost:27017/orchestrator", validation_alias="MONGO_URL")
    connect_timeout_s: float = Field(
        5.0,
        gt=0,
        le=300,
        validation_alias="ORCH_CONNECT_TIMEOUT_S",
        description="how long a call waits for Redis or MongoDB to answer before it gives up "
        "(the command line waits 1 s unless this is set)",
    )
    max_depth: int = Field(8, ge=0, validation_alias="ORCH_MAX_DEPTH")
    home: Path = Field(Path("./.orchestrator"), validation_alias="ORCH_HOME")
    max_run_doc_bytes: int = Field(
        1024 * 1024, ge=16 * 1024, le=15 * 1024 * 1024, validation_alias="ORCH_MAX_RUN_DOC_BYTES"
    )
    max_child_variables_bytes: int = Field(
        64 * 1024, ge=1024, le=15 * 1024 * 1024, validation_alias="ORCH_MAX_CHILD_VARIABLES_BYTES"
    )
    plugins: str = Field(
        "", validation_alias="ORCH_PLUGINS", description="comma-separated modules that define node types"
    )
    schedule_refresh_s: float = Field(5.0, gt=0, le=3600, validation_alias="ORCH_SCHEDULE_REFRESH_S")
    telegram_bot_token: SecretStr | None = Field(None, validation_alias="TELEGRAM_BOT_TOKEN")
    telegram_chat_id: str | None = Field(None, validation_alias="TELEGRAM_CHAT_ID")
    telegram_api_url: str = Field("https://api.telegram.org", validation_alias="TELEGRAM_API_URL")
    twelvedata_api_key: SecretStr | None = Field(None, validation_alias="TWELVEDATA_API_KEY")
    twelvedata_url: str = Field("https://api.twelvedata.com", validation_alias="TWELVEDATA_URL")

    @property
    def plugin_modules(self) -> list[str]:
        """The modules named in `ORCH_PLUGINS`, in order."""
        return [m.strip() for m in self.plugins.split(",") if m.strip()]

    @property
    def mongo_database(self) -> str:
        """The database named in `MONGO_URL` (`orchestrator` when the URL names none)."""
        from pymongo.uri_parser import parse_uri

        return parse_uri(self.mongo_url).get("database") or "orchestrator"


# Environment variable names, for the docker-compose check and the docs.
ENV_VARS = tuple(
    str(f.validation_alias) for f in Settings.model_fields.values() if isinstance(f.validation_alias, str)
)
