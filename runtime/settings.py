"""One settings class for every entry point. Temporal's own variables keep their names."""

from __future__ import annotations

import getpass
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from activities.accounts import AccountsSource
from activities.gateway.buckets import AwsBudget
from activities.notify.delivery import NotifyActivities
from activities.notify.links import LinkBase
from domain.execution import TASK_QUEUE
from domain.notifications import SecretRef
from domain.policy import Policy, Role
from runtime.approval_key import ApprovalKeyError, ApprovalSigner


def _default_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECLAIM_", extra="ignore", populate_by_name=True)

    temporal_address: str = Field(
        default="localhost:7233", validation_alias=AliasChoices("TEMPORAL_ADDRESS", "temporal_address")
    )
    temporal_namespace: str = Field(
        default="default", validation_alias=AliasChoices("TEMPORAL_NAMESPACE", "temporal_namespace")
    )
    temporal_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("TEMPORAL_API_KEY", "temporal_api_key"), repr=False
    )
    temporal_tls: bool = Field(default=False, validation_alias=AliasChoices("TEMPORAL_TLS", "temporal_tls"))
    temporal_tls_client_cert_path: Path | None = Field(
        default=None, validation_alias=AliasChoices("TEMPORAL_TLS_CLIENT_CERT_PATH", "temporal_tls_client_cert_path")
    )
    temporal_tls_client_key_path: Path | None = Field(
        default=None, validation_alias=AliasChoices("TEMPORAL_TLS_CLIENT_KEY_PATH", "temporal_tls_client_key_path")
    )
    task_queue: str = TASK_QUEUE
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "database_url"), repr=False
    )
    home: Path = Field(default=Path(".reclaim"), description="Where the embedded databases live.")
    user: str = Field(default_factory=_default_user, description="Who is acting (--as overrides).")
    role: Role = Field(default=Role.APPROVER, description="The acting person's role on the CLI path.")
    role_arn_template: str | None = Field(
        default=None, description="e.g. arn:aws:iam::{account_id}:role/ReclaimExecutor; unset: default chain."
    )
    accounts_file: Path | None = Field(
        default=None, description="The accounts file (YAML; README, Across an organization): the accounts "
        "Reclaim acts in, their roles, external ids, regions, kill switch and policy overrides. Unset: "
        "any account, through role_arn_template or the default chain.")
    aws_endpoint_url: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_ENDPOINT_URL", "aws_endpoint_url")
    )
    web_ui_url: str = Field(default="http://localhost:8233", description="Where operators open the Web UI.")
    max_concurrent_activities: int = 32
    max_cached_workflows: int = Field(
        default=1000, ge=0, description="Workflow runs a worker keeps in memory between their tasks. "
        "A run not in the cache is replayed from its history when it next moves (a few ms for an "
        "execution); lower it to bound memory when thousands wait for approval.")
    aws_budget_share: float = Field(
        default=1.0, ge=0, le=1, description="This worker's share of each of AWS's throttling buckets per account "
        "and region (activities/gateway/buckets.py): 1 / the number of workers sharing the accounts; 0 turns "
        "the budget off.")
    aws_coalesce_window_ms: float = Field(
        default=50.0, ge=0, le=1000, description="How long a single-resource describe (or stop) waits "
        "for other executions' to share one AWS call; 0 sends each as asked.")
    aws_patient_window_ms: float = Field(
        default=2000.0, ge=0, le=10000, description="How long a describe or a stop by a step after validation "
        "(backup, apply, verify polls) waits for other executions' to share one AWS call, when another "
        "execution used that call in the last 3 s (a lone execution does not wait); at least the "
        "coalescing window. Race N=500: 1.85x the baseline's requests at 500, 1.36x at 2000.")
    aws_validate_read_age_s: float = Field(
        default=10.0, ge=0, le=60, description="How old an answer validation may take from a call sent after "
        "its execution began (a plan's next items are read ahead by the one before; activities/gateway); "
        "0: every validation asks AWS itself.")

    notify_file: Path | None = Field(
        default=None, description="The notify file (YAML): channels and rules of who is told what "
        "(README, Notifications). Unset: nobody is told; executions go on.")

    worker_metrics_host: str = Field(default="127.0.0.1", description="Where the worker's /metrics listens "
                                     "(0.0.0.0 for a scraper on another host or container).")
    worker_metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="The worker's /metrics (notification deliveries: sent, "
        "failed, latency per channel; runtime/worker_metrics.py). Unset: not served; 0: any free port.")

    windows_file: Path | None = Field(
        default=None, description="Change windows and freezes (YAML; README, Across an organization). "
        "Unset: a change may start whenever it is approved.")

    # Payload encryption (README, Encryption; runtime/codec.py): off unless RECLAIM_ENCRYPT is true.
    encrypt: bool = Field(default=False, description="Seal every payload written to Temporal (AES-256-GCM).")
    codec_keys: str | None = Field(default=None, repr=False, description="id=base64key, ... newest first.")
    codec_keys_file: Path | None = Field(default=None, description="The same, one a line; default <home>/codec-keys.")
    codec_kms_key_id: str | None = Field(default=None, description="KMS key (id, ARN or alias): data keys seal.")
    codec_kms_region: str | None = None
    codec_kms_cache_seconds: float = Field(default=300.0, gt=0, le=86400)
    codec_accept_plaintext: bool = Field(default=False, description="Read payloads written before encryption.")
    codec_server_host: str = "127.0.0.1"
    codec_server_port: int = 8234
    codec_server_tokens_file: Path | None = Field(default=None, description="Who may decode: API tokens' format.")
    codec_server_tokens: str | None = Field(default=None, repr=False)
    codec_ui_origin: str | None = Field(default=None, description="CORS origin of the Web UI (default web_ui_url's).")
    codec_ui_token: str | None = Field(default=None, repr=False, description="The Web UI's path token.")
    codec_jwt_jwks_file: Path | None = Field(default=None, description="The IdP's public keys (JWKS) for the "
                                             "Web UI's forwarded JWT (starter/codec_jwt.py).")
    codec_jwt_public_key_file: Path | None = Field(default=None, description="Or one PEM public key.")
    codec_jwt_issuer: str | None = Field(default=None, description="The JWT's required iss.")
    codec_jwt_audience: str | None = Field(default=None, description="The JWT's required aud.")
    codec_jwt_leeway_seconds: float = Field(default=30.0, ge=0, le=300, description="Clock skew allowed on exp/nbf.")
    log_level: str | None = Field(default=None, description="Root log level (default: each command's own).")

    # Approvals from Slack and from the page (README, Notifications: Slack app, approval page).
    public_url: str | None = Field(default=None, description="Where people reach the API and its approval "
                                   "page, e.g. https://reclaim.example.com (default http://<api_host>:<api_port>).")
    slack_signing_secret: str | None = Field(default=None, repr=False, description="The Slack app's signing "
                                             "secret: verifies its interactivity callbacks. Unset: refused (401).")
    identities_file: Path | None = Field(default=None, description="YAML: Slack user id -> Reclaim user, "
                                         "role, customers (who decides from Slack).")

    # Signed approvals (README, Deployment; domain/signing.py).
    approval_public_key: str | None = Field(
        default=None, description="Ed25519 public key(s), base64, comma-separated (newest first): executions "
        "and plans started here accept only decisions signed with the matching private key. Unset: "
        "decisions are taken at their word.")
    approval_signing_key: SecretRef | None = Field(
        default=None, description="env:NAME or file:/path of the private key that signs decisions (the API, "
        "the CLI on the embedded stack); never inline, never needed by a worker.")

    def approval_signer(self) -> ApprovalSigner | None:
        """The signer, read once; a key that cannot be read, or that none of the public keys here
        matches, stops start-up with the reason (never the key)."""
        if self.approval_signing_key is None:
            return None
        signer = ApprovalSigner.from_reference(self.approval_signing_key)
        public = self.policy().approval_public_keys
        if public and signer.public_key not in public:
            raise ApprovalKeyError(f"approval signing key {self.approval_signing_key}: its public key "
                                   f"{signer.public_key} is not among RECLAIM_APPROVAL_PUBLIC_KEY's")
        return signer

    def public_base(self) -> str:
        return (self.public_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")

    def notify(self) -> NotifyActivities | None:
        """The notify file's activities; a malformed file stops start-up naming its line and field."""
        if self.notify_file is None:
            return None
        links = LinkBase(public_url=self.public_base(), web_ui_url=self.web_ui_url, namespace=self.temporal_namespace)
        return NotifyActivities.from_path(self.notify_file, links=links)

    def accounts(self) -> AccountsSource | None:
        """The accounts file as it is at each use (re-read when it changes); None when unset."""
        return AccountsSource(self.accounts_file) if self.accounts_file is not None else None

    def aws_budget(self) -> AwsBudget | None:
        return AwsBudget(share=self.aws_budget_share) if self.aws_budget_share > 0 else None

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_tokens_file: Path | None = Field(default=None, description="JSON or YAML list of tokens (hashed).")
    api_tokens: str | None = Field(default=None, repr=False, description="The same list inline, as JSON.")
    auto_approve_max_monthly_savings: float = 500.0
    production_tags: list[str] = Field(default_factory=lambda: Policy().production_tags)
    refuse_production: bool = True

    def policy(self) -> Policy:
        return Policy(
            auto_approve_max_monthly_savings=self.auto_approve_max_monthly_savings,
            production_tags=self.production_tags,
            refuse_production=self.refuse_production,
            approval_public_keys=[k.strip() for k in (self.approval_public_key or "").split(",") if k.strip()],
        )

    def database(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.home / 'reclaim.db'}"
