"""Settings: one typed object, read once from the environment (or a `.env` file) and validated."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
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
    lease_s: float = Field(
        30.0,
        ge=3,
        le=3600,
        validation_alias="ORCH_LEASE_S",
        description="how long a running node's lease lasts (renewed every third of it while it "
        "runs): a node whose worker died is run again once its lease is this old",
    )
    sweep_s: float = Field(
        15.0,
        ge=1,
        le=3600,
        validation_alias="ORCH_SWEEP_S",
        description="how often `orchestrator beat` runs the reconciler",
    )
    stall_s: float = Field(
        30.0,
        ge=1,
        le=3600,
        validation_alias="ORCH_STALL_S",
        description="how long a run may wait with no message on the broker and nothing "
        "running before the reconciler sends the rest of it again",
    )
    outage_retry_s: float = Field(
        300.0,
        ge=0,
        le=86400,
        validation_alias="ORCH_OUTAGE_RETRY_S",
        description="how long a node message keeps retrying while MongoDB or Redis does not "
        "answer, before it leaves the run to the reconciler",
    )
    retention_days: float | None = Field(
        None,
        gt=0,
        le=36500,
        validation_alias="ORCH_RETENTION_DAYS",
        description="how many days runs are kept once over: `orchestrator beat` removes older "
        "ones every hour, each top-level run with its child runs, logs and wait records "
        "(unset: runs are kept until `orchestrator runs prune` removes them)",
    )
    home: Path = Field(Path("./.orchestrator"), validation_alias="ORCH_HOME")
    data_dir_setting: Path | None = Field(
        None,
        validation_alias="ORCH_DATA_DIR",
        description="the only directory file-reading nodes may read (default: ORCH_HOME/data)",
    )
    python_sandbox: Literal["bwrap", "none"] = Field(
        "bwrap",
        validation_alias="ORCH_PYTHON_SANDBOX",
        description="how `python` nodes are contained: `bwrap` (namespaces, via bubblewrap) or "
        "`none` (an explicit opt-out: the code runs as the worker's user, with its files and network)",
    )
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
    ui_password: SecretStr | None = Field(
        None,
        validation_alias="ORCH_UI_PASSWORD",
        description="the web UI's password (HTTP basic auth, any user name); needed to serve it on "
        "an address other than localhost, unless ORCH_UI_TOKEN is set",
    )
    ui_token: SecretStr | None = Field(
        None,
        validation_alias="ORCH_UI_TOKEN",
        description="a token the web UI takes instead of a password (`Authorization: Bearer`, or "
        "`?token=` once in a browser)",
    )
    twelvedata_url: str = Field("https://api.twelvedata.com", validation_alias="TWELVEDATA_URL")

    @field_validator("retention_days", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty value is unset, given to the model as well as in the environment."""
        return None if value == "" else value

    @property
    def data_dir(self) -> Path:
        """The directory file-reading nodes may read: `ORCH_DATA_DIR`, else `ORCH_HOME/data`."""
        return (self.data_dir_setting or self.home / "data").resolve()

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
