"""One settings object: every ``CAIRN_*`` variable, its CLI flag and its default, resolved in one place.

Order, for every setting: the command-line flag, then the environment variable, then the project
file (``cairn.yaml`` in the working directory, or the file ``$CAIRN_PROJECT`` names), then the
default. No other module in :mod:`integrity` reads ``os.environ``: the CLI and the pipelines build a
:class:`Settings` once and pass the values down.

The project file is YAML with the lower-case keys of :data:`VARIABLES` (``store: s3://bucket/cairn``);
relative paths in it are relative to the file's folder. Unknown keys are a usage error.

This module sits at the bottom of the layers: it imports only :mod:`integrity.errors` and
:mod:`integrity.safeio`.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from integrity.errors import UsageError

#: The project file looked for in the working directory.
PROJECT_FILE = "cairn.yaml"
#: The variable that points at a project file elsewhere.
PROJECT_ENV = "CAIRN_PROJECT"


@dataclass(frozen=True)
class Variable:
    """One setting: its project-file key, environment variable, flag, default (in words) and meaning."""

    key: str
    env: str
    help: str
    default: str
    flag: str = ""
    #: Further environment variables read, in order, after ``env`` (standard ones such as AWS's).
    fallbacks: tuple[str, ...] = ()
    #: Whether a project-file value is a path (resolved against the file's folder).
    path: bool = True


VARIABLES: tuple[Variable, ...] = (
    Variable("home", "CAIRN_HOME", "Cairn home: drops, work area, keys, releases, Dagster home", "./.cairn",
             "--home"),
    Variable("store", "CAIRN_STORE", "artifact store: a path, file:// or s3://bucket/prefix", "HOME/store",
             "--store"),
    Variable("catalog", "CAIRN_CATALOG", "source catalog YAML", "PROJECT/catalog.yaml, else the packaged demo catalog",
             "--catalog"),
    Variable("release_spec", "CAIRN_RELEASE_SPEC", f"release spec YAML(s) or folders of them, separated by "
             f"{os.pathsep!r}", "PROJECT/releases/, else the packaged demo release specs", "--spec"),
    Variable("release_policy", "CAIRN_RELEASE_POLICY", "who may sign which model's releases",
             "HOME/release-policy.yaml", "--release-policy"),
    Variable("release_key", "CAIRN_RELEASE_KEY", "private key the release pipeline signs with",
             "HOME/keys/release.key"),
    Variable("release_signing", "CAIRN_RELEASE_SIGNING", "how releases are signed: key or keyless", "key",
             path=False),
    Variable("releases", "CAIRN_RELEASES", "where signed release bundles are written", "HOME/releases"),
    Variable("suites", "CAIRN_SUITES", "folder of expectation suites that catalogs name",
             "PROJECT/suites, else the packaged suites"),
    Variable("drop_location", "CAIRN_DROP_LOCATION", "where vendors drop files (folder or s3://)",
             "HOME/drops"),
    Variable("s3_endpoint_url", "CAIRN_S3_ENDPOINT_URL", "S3 endpoint (MinIO, moto, on-premises)",
             "AWS's default", fallbacks=("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"), path=False),
    Variable("s3_timeout", "CAIRN_S3_TIMEOUT", "seconds one S3 request may wait (3 attempts)", "20",
             path=False),
    Variable("revocations", "CAIRN_REVOCATIONS", "stores whose signed revocations publish, pull and audit "
             "consult besides the store at hand (the publisher's revocation list), comma-separated; none: only "
             "the store at hand", "the configured store", path=False),
    Variable("reverify_schedule", "CAIRN_REVERIFY_SCHEDULE", "when Dagster re-verifies every attested source "
             "against its publisher signature: a cron string, optionally followed by a time zone; none: never",
             "0 2 * * * UTC", path=False),
    Variable("max_image_bytes", "CAIRN_MAX_IMAGE_BYTES", "decoded bytes one image dataset may take, checked on "
             "the headers before any pixel is decoded (decompression bombs)", "2147483648 (2 GiB)", path=False),
    Variable("pull_state", "CAIRN_PULL_STATE", "what `cairn pull` has seen (rollback protection)",
             "HOME/pull-state.json", "--state"),
    Variable("pull_timeout", "CAIRN_PULL_TIMEOUT", "seconds a whole pull may take", "1800", "--timeout",
             path=False),
    Variable("ledger_key", "CAIRN_LEDGER_KEY", "private key that signs the ledger's tree heads",
             "HOME/keys/ledger.key"),
    Variable("ledger_public_key", "CAIRN_LEDGER_PUBLIC_KEY", "public key tree heads must verify against",
             "beside the private key", "--ledger-key"),
    Variable("ledger_checkpoint", "CAIRN_LEDGER_CHECKPOINT", "last verified ledger size (rollback check)",
             "HOME/ledger-checkpoints/", "--checkpoint"),
    Variable("rekor_url", "CAIRN_REKOR_URL", "Rekor that witnesses ledger heads", "none", path=False),
    Variable("ledger_cert", "CAIRN_LEDGER_CERT", "certificate sent to Rekor with witnessed heads",
             "the ledger public key"),
    Variable("reports_url", "CAIRN_REPORTS_URL", "where `cairn serve` serves records, Data Docs, lineage and "
             "audits over HTTP (the UI links there; 'none': no links)", "http://127.0.0.1:3100", "--reports-url",
             path=False),
    Variable("sigstore_id_token", "SIGSTORE_ID_TOKEN", "OIDC token for keyless signing",
             "ambient CI credentials", "--identity-token", path=False),
)
_BY_KEY = {v.key: v for v in VARIABLES}

DEFAULT_S3_TIMEOUT = 20.0
DEFAULT_REPORTS_URL = "http://127.0.0.1:3100"
DEFAULT_PULL_TIMEOUT = 1800.0
DEFAULT_MAX_IMAGE_BYTES = 2 << 30


def _seconds(raw: str, what: str, *, upper: float) -> float:
    try:
        value = float(raw)
    except ValueError as exc:
        raise UsageError(f"{what}={raw!r} is not a number of seconds") from exc
    if not 0 < value <= upper:
        raise UsageError(f"{what}={raw!r} must lie in (0, {upper:g}] seconds")
    return value


def package_data(*parts: str) -> Path:
    """A file or folder shipped inside the ``integrity`` package (works from a checkout and a wheel)."""
    root = resources.files("integrity").joinpath("data", *parts)
    return Path(str(root))


def load_project_file(path: Path) -> dict[str, str]:
    """The project file's settings, validated: unknown keys and non-text values are usage errors."""
    from integrity import safeio

    _, data = safeio.load_yaml_file(path, what="project file", error=UsageError)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError("the project file must be a mapping of setting to value", artifact=path)
    problems = []
    values: dict[str, str] = {}
    for key, value in data.items():
        variable = _BY_KEY.get(str(key))
        if variable is None:
            problems.append(f"unknown setting {key!r}")
        elif not isinstance(value, str | int | float) or isinstance(value, bool):
            problems.append(f"{key}: expected text or a number, got {type(value).__name__}")
        else:
            text = str(value)
            if variable.path and "://" not in text:
                text = os.pathsep.join(str((path.parent / p).resolve()) for p in text.split(os.pathsep) if p)
            values[variable.key] = text
    if problems:
        raise UsageError("invalid project file: " + "; ".join(problems), artifact=path,
                         advice="Valid settings: " + ", ".join(v.key for v in VARIABLES) + ".")
    return values


class Settings:
    """Resolved settings. Build one with :func:`current` (or with explicit mappings in tests)."""

    def __init__(self, *, flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None,
                 project: Path | None = None) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self._flags = {k: str(v) for k, v in (flags or {}).items() if v is not None and str(v) != ""}
        unknown = set(self._flags) - set(_BY_KEY)
        if unknown:
            raise UsageError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        if project is None:
            named = self._environ.get(PROJECT_ENV, "").strip()
            if named:
                project = Path(named)
                if not project.is_file():
                    raise UsageError(f"${PROJECT_ENV} names no file: {named}", artifact=named)
            elif Path(PROJECT_FILE).is_file():
                project = Path(PROJECT_FILE).resolve()
        self.project_file = project
        self._project = load_project_file(project) if project is not None else {}

    def with_flags(self, **flags: Any) -> "Settings":
        """The same environment and project file, with these flags on top."""
        merged = {**self._flags, **{k: v for k, v in flags.items() if v is not None and str(v) != ""}}
        return Settings(flags=merged, environ=self._environ, project=self.project_file)

    def raw(self, key: str) -> str | None:
        """The configured value of ``key`` (flag > environment > project file), or None for the default."""
        variable = _BY_KEY[key]
        if key in self._flags:
            return self._flags[key]
        for name in (variable.env, *variable.fallbacks):
            value = self._environ.get(name, "")
            if value.strip():
                return value
        return self._project.get(key)

    def origin(self, key: str) -> str:
        """Where ``key``'s value comes from: flag, environment, project file or default."""
        variable = _BY_KEY[key]
        if key in self._flags:
            return f"flag {variable.flag}" if variable.flag else "flag"
        for name in (variable.env, *variable.fallbacks):
            if self._environ.get(name, "").strip():
                return f"${name}"
        if key in self._project:
            return f"project file {self.project_file}"
        return "default"

    def _path(self, key: str, default: Path) -> Path:
        value = self.raw(key)
        return Path(value) if value else default

    # -- the settings ------------------------------------------------------------------------------

    @property
    def project_dir(self) -> Path | None:
        """The folder of the project file (``cairn init`` makes one): its files are the defaults, never the demo's."""
        return self.project_file.parent.resolve() if self.project_file is not None else None

    @property
    def home(self) -> Path:
        project = self.project_dir
        return self._path("home", project / ".cairn" if project else Path(".cairn")).resolve()

    @property
    def store(self) -> str:
        """The artifact store every command uses unless told otherwise: ``HOME/store`` by default."""
        return self.raw("store") or str(self.home / "store")

    @property
    def reports_url(self) -> str | None:
        """The report server's base URL (no trailing slash), or None where links are switched off."""
        value = (self.raw("reports_url") or DEFAULT_REPORTS_URL).strip().rstrip("/")
        if value.lower() == "none":
            return None
        if not value.startswith(("http://", "https://")) or len(value.split("://", 1)[1]) == 0:
            raise UsageError(f"CAIRN_REPORTS_URL={value!r}: use an http:// or https:// URL, or none")
        return value

    @property
    def catalog(self) -> Path:
        project = self.project_dir
        return self._path("catalog", project / "catalog.yaml" if project else package_data("catalogs", "demo.yaml"))

    @property
    def release_specs(self) -> list[Path]:
        """Every release spec: the files named, the ``*.yaml`` of the folders named."""
        value = self.raw("release_spec")
        project = self.project_dir
        named = ([Path(p) for p in value.split(os.pathsep) if p] if value
                 else [project / "releases" if project else package_data("releases")])
        found: list[Path] = []
        for path in named:
            found += sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        return found

    @property
    def release_policy(self) -> Path:
        return self._path("release_policy", self.home / "release-policy.yaml")

    @property
    def release_key(self) -> Path:
        return self._path("release_key", self.home / "keys" / "release.key")

    @property
    def release_signing(self) -> str:
        value = (self.raw("release_signing") or "key").strip()
        if value not in ("key", "keyless"):
            raise UsageError(f"CAIRN_RELEASE_SIGNING={value!r}: use key or keyless")
        return value

    @property
    def releases(self) -> Path:
        return self._path("releases", self.home / "releases")

    @property
    def suites(self) -> Path:
        project = self.project_dir
        return self._path("suites", project / "suites" if project else package_data("expectations"))

    @property
    def reverify_schedule(self) -> str:
        """The re-verification schedule as written (``CRON [TIMEZONE]`` or ``none``); parsed by
        :func:`integrity.intake.schedule.parse_schedule_setting` where it is used."""
        return (self.raw("reverify_schedule") or "").strip() or "0 2 * * * UTC"

    @property
    def revocation_sources(self) -> list[str]:
        """Store URLs whose revocations are consulted everywhere (``none``: none); default the configured store."""
        raw = (self.raw("revocations") or "").strip()
        if raw.lower() == "none":
            return []
        if raw:
            return [part.strip() for part in raw.split(",") if part.strip()]
        configured = self.store
        if self.raw("store") is None and "://" not in configured and not Path(configured).is_dir():
            return []  # no store configured or made yet: nothing was ever revoked here
        return [configured]

    @property
    def drop_location(self) -> str:
        return self.raw("drop_location") or str(self.home / "drops")

    @property
    def s3_endpoint_url(self) -> str | None:
        return self.raw("s3_endpoint_url") or None

    @property
    def s3_timeout(self) -> float:
        raw = self.raw("s3_timeout")
        return _seconds(raw.strip(), "CAIRN_S3_TIMEOUT", upper=3600) if raw else DEFAULT_S3_TIMEOUT

    @property
    def pull_state(self) -> Path:
        return self._path("pull_state", self.home / "pull-state.json")

    @property
    def max_image_bytes(self) -> int:
        raw = (self.raw("max_image_bytes") or "").strip()
        if not raw:
            return DEFAULT_MAX_IMAGE_BYTES
        try:
            value = int(raw.replace("_", ""))
        except ValueError as exc:
            raise UsageError(f"CAIRN_MAX_IMAGE_BYTES={raw!r} is not a whole number of bytes") from exc
        if value < 1 << 20:
            raise UsageError(f"CAIRN_MAX_IMAGE_BYTES={raw!r} is below 1 MiB: no image dataset could be read")
        return value

    @property
    def pull_timeout(self) -> float:
        raw = self.raw("pull_timeout")
        return _seconds(raw.strip(), "CAIRN_PULL_TIMEOUT", upper=7 * 86400) if raw else DEFAULT_PULL_TIMEOUT

    @property
    def ledger_key(self) -> Path | None:
        value = self.raw("ledger_key")
        return Path(value) if value else None

    @property
    def ledger_public_key(self) -> Path | None:
        value = self.raw("ledger_public_key")
        return Path(value) if value else None

    @property
    def ledger_checkpoint(self) -> str | None:
        return self.raw("ledger_checkpoint")

    @property
    def rekor_url(self) -> str | None:
        return (self.raw("rekor_url") or "").rstrip("/") or None

    @property
    def ledger_cert(self) -> Path | None:
        value = self.raw("ledger_cert")
        return Path(value) if value else None

    @property
    def sigstore_id_token(self) -> str | None:
        return (self.raw("sigstore_id_token") or "").strip() or None

    def describe(self) -> list[dict[str, str]]:
        """Every setting with its value and where it came from (``cairn config``)."""
        rows = []
        for variable in VARIABLES:
            secret = variable.key == "sigstore_id_token"
            value = self.raw(variable.key)
            rows.append({"setting": variable.key, "variable": variable.env,
                         "value": ("(set)" if value else "") if secret else (value or ""),
                         "origin": self.origin(variable.key), "default": variable.default})
        return rows


def current(**flags: Any) -> Settings:
    """Settings from this process's environment and project file, with ``flags`` on top."""
    return Settings(flags=flags)


def process_environment() -> dict[str, str]:
    """A copy of this process's environment: for the CLI's per-option variables (cli/environment.py),
    which are not settings but are read here so that one module reads the environment."""
    return dict(os.environ)


def subprocess_path() -> str:
    """``$PATH`` for the isolated child processes Cairn starts (format conversions)."""
    return os.environ.get("PATH", "/usr/bin:/bin")


def quiet_third_party() -> None:
    """Turn off third-party telemetry before importing it (Great Expectations' analytics)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def environment_table() -> str:
    """The README's table of environment variables (a test keeps the README in step)."""
    lines = ["| Variable | Project-file key | Flag | Default | Meaning |", "|---|---|---|---|---|"]
    for v in VARIABLES:
        lines.append(f"| `{v.env}` | `{v.key}` | {f'`{v.flag}`' if v.flag else ''} | {v.default} | {v.help} |")
    return "\n".join(lines)


__all__ = ["PROJECT_FILE", "VARIABLES", "Settings", "Variable", "current", "environment_table", "package_data"]


if __name__ == "__main__":  # print the README's table
    print(environment_table())
