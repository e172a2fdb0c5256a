"""Configuration from the environment (and a ``.env`` file in the working directory)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from storage import DEFAULT_DATABASE_URL, InvalidInput, Signer
from storage.checkpoints import load_signer

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_GITHUB_KEYS_URL = "https://api.github.com/meta/public_keys/secret_scanning"
PUBLIC_LEAK_ACTIONS = ("revoke", "alert")


class ConfigError(Exception):
    """A setting is missing or wrong; the message names it."""


def load_dotenv_file() -> None:
    """Load ``./.env`` if present; real environment variables win."""
    try:
        from dotenv import load_dotenv
    except ImportError:  # pragma: no cover - python-dotenv is a dependency
        return
    path = os.path.join(os.getcwd(), ".env")
    if os.path.exists(path):
        load_dotenv(path, override=False)


def _split_ids(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _seconds(get, name: str, default: float, most: float) -> float:
    """A setting in seconds, from 0.1 to ``most``."""
    text = get(name) or str(default)
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= most:
        raise ConfigError(f"{name} must be a number of seconds from 0.1 to {most:g}, got {text!r}")
    return value


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str = DEFAULT_SLACK_API_URL
    admins: tuple[str, ...] = field(default_factory=tuple)
    audit_channel: str | None = None
    audit_signer: Signer | None = field(default=None, repr=False)  # APIKEYS_AUDIT_SIGNING_KEY, loaded
    host: str = "0.0.0.0"
    port: int = 3000
    workers: int = 2
    threads: int = 2  # Python threads per worker: granian does the HTTP work in Rust
    github_keys_url: str = DEFAULT_GITHUB_KEYS_URL  # GitHub secret scanning's signing keys
    public_leak_action: str = "revoke"  # a valid key GitHub found in public: revoke, or only alert
    metrics_port: int | None = None  # METRICS_PORT: /metrics on a listener of its own, off the public one
    self_check_interval: float = 60.0  # APIKEYS_SELF_CHECK_INTERVAL: seconds between the server's self-checks
    body_timeout: float = 10.0  # APIKEYS_BODY_TIMEOUT: seconds a request body may take to arrive (else 408)
    database_migration_url: str | None = field(default=None, repr=False)  # DATABASE_MIGRATION_URL: the owning role
    public_url: str | None = None  # APIKEYS_PUBLIC_URL: this server's public base URL (one-time links)
    expiry_digest_hour: int = 9    # APIKEYS_EXPIRY_DIGEST_HOUR: when (UTC) the daily expiry digest is sent

    @property
    def slack_enabled(self) -> bool:
        return bool(self.slack_bot_token)

    @property
    def socket_mode(self) -> bool:
        return self.slack_enabled and bool(self.slack_app_token)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        port_text = get("PORT") or "3000"
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"PORT must be a TCP port number, got {port_text!r}")
        workers_text = get("WEB_CONCURRENCY") or "2"
        if not workers_text.isdigit() or not 1 <= int(workers_text) <= 64:
            raise ConfigError(f"WEB_CONCURRENCY must be a number of workers from 1 to 64, got {workers_text!r}")
        threads_text = get("WEB_THREADS") or "2"
        if not threads_text.isdigit() or not 1 <= int(threads_text) <= 256:
            raise ConfigError(f"WEB_THREADS must be a number from 1 to 256, got {threads_text!r}")
        metrics_port_text = get("METRICS_PORT")
        if metrics_port_text is not None and (not metrics_port_text.isdigit() or not 0 < int(metrics_port_text) < 65536
                                              or int(metrics_port_text) == int(port_text)):
            raise ConfigError(f"METRICS_PORT must be a TCP port number other than PORT, got {metrics_port_text!r}")
        interval = _seconds(get, "APIKEYS_SELF_CHECK_INTERVAL", 60, 86400)
        body_timeout = _seconds(get, "APIKEYS_BODY_TIMEOUT", 10, 600)
        signing_key = env.get("APIKEYS_AUDIT_SIGNING_KEY", "").strip()
        try:
            signer = load_signer(signing_key) if signing_key else None
        except InvalidInput as exc:
            raise ConfigError(str(exc)) from None
        api_url = get("SLACK_API_URL") or DEFAULT_SLACK_API_URL
        github_keys_url = get("APIKEYS_GITHUB_KEYS_URL") or DEFAULT_GITHUB_KEYS_URL
        if not github_keys_url.startswith(("https://", "http://")) or any(ch.isspace() for ch in github_keys_url):
            raise ConfigError(f"APIKEYS_GITHUB_KEYS_URL must be an http(s) URL, got {github_keys_url!r}")
        leak_action = (get("APIKEYS_PUBLIC_LEAK_ACTION") or "revoke").lower()
        if leak_action not in PUBLIC_LEAK_ACTIONS:
            raise ConfigError(f"APIKEYS_PUBLIC_LEAK_ACTION must be revoke or alert, got {leak_action!r}")
        if not api_url.endswith("/"):
            api_url += "/"
        public_url = get("APIKEYS_PUBLIC_URL")
        if public_url is not None and (not public_url.startswith(("https://", "http://")) or "#" in public_url
                                       or "?" in public_url or any(ch.isspace() for ch in public_url)):
            raise ConfigError(f"APIKEYS_PUBLIC_URL must be this server's public http(s) base URL, like "
                              f"https://apikeys.example.com, got {public_url!r}")
        hour_text = get("APIKEYS_EXPIRY_DIGEST_HOUR") or "9"
        if not hour_text.isdigit() or not 0 <= int(hour_text) <= 23:
            raise ConfigError(f"APIKEYS_EXPIRY_DIGEST_HOUR must be an hour from 0 to 23 (UTC), got {hour_text!r}")
        settings = cls(
            database_url=get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            slack_bot_token=get("SLACK_BOT_TOKEN"),
            slack_signing_secret=get("SLACK_SIGNING_SECRET"),
            slack_app_token=get("SLACK_APP_TOKEN"),
            slack_api_url=api_url,
            admins=_split_ids(env.get("APIKEYS_ADMINS", "")),
            audit_channel=get("APIKEYS_AUDIT_CHANNEL"),
            audit_signer=signer,
            host=get("HOST") or "0.0.0.0",
            port=int(port_text),
            workers=int(workers_text),
            threads=int(threads_text),
            github_keys_url=github_keys_url,
            public_leak_action=leak_action,
            metrics_port=int(metrics_port_text) if metrics_port_text else None,
            self_check_interval=interval,
            body_timeout=body_timeout,
            database_migration_url=get("DATABASE_MIGRATION_URL"),
            public_url=public_url.rstrip("/") if public_url else None,
            expiry_digest_hour=int(hour_text),
        )
        settings.check()
        return settings

    def check(self) -> None:
        if not self.slack_enabled:
            return
        if not self.slack_bot_token.startswith("xoxb-"):
            raise ConfigError("SLACK_BOT_TOKEN must be a bot token starting with xoxb-")
        if self.slack_app_token and not self.slack_app_token.startswith("xapp-"):
            raise ConfigError("SLACK_APP_TOKEN must be an app-level token starting with xapp-")
        if not self.slack_signing_secret and not self.slack_app_token:
            raise ConfigError("SLACK_SIGNING_SECRET is required to receive Slack requests over HTTP")
        if not self.audit_channel:
            raise ConfigError("APIKEYS_AUDIT_CHANNEL (a channel ID like C0123ABCD) is required with Slack")
