"""``cairn audit RELEASE``: re-verify a release bundle offline and show its lineage.

Every signature and digest is checked again (see :func:`integrity.release.bundle.audit_bundle`), with
all findings collected rather than stopping at the first, so the auditor sees every file that
fails. The lineage tree is printed from ``lineage.json``; ``--html`` writes one self-contained
file (inline SVG and styles, no scripts, nothing fetched) for auditors without Dagster.

Who may sign the release comes from a release policy (``--policy``, default
``$CAIRN_RELEASE_POLICY`` or ``<home>/release-policy.yaml``) or a pinned key (``--key``).
Revocations are checked when a store is given (``--store``) or the home has one.
"""

import hashlib
import html
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from integrity import safeio
from integrity.distribution.revocations import consult, revocation_stores
from integrity.errors import EXIT_OK, EXIT_REJECTED, EXIT_USAGE, CairnError, UsageError
from integrity.release.bundle import audit_bundle
from integrity.release.findings import BundleAudit, Finding
from integrity.release.index import INDEX_NAME, INDEX_SIGNATURE_NAME, ReleaseIndex
from integrity.release.provenance import lineage_tree, render_svg
from integrity.release.revocation import RevocationList
from integrity.settings import current
from integrity.trust.policy import AnyOf, PublicKey, SourcePolicy, TrustPolicy, load_policy


@dataclass(frozen=True)
class AuditReport:
    path: Path
    audit: BundleAudit
    policy: TrustPolicy
    revocations: str
    lineage: dict[str, Any] | None
    lineage_verified: bool
    created: str

    @property
    def ok(self) -> bool:
        return self.audit.ok

    @property
    def exit_code(self) -> int:
        if self.ok:
            return EXIT_OK
        codes = {f.error.exit_code for f in self.audit.failures if f.error is not None}
        return EXIT_USAGE if codes == {EXIT_USAGE} else EXIT_REJECTED

    @property
    def failed_files(self) -> list[str]:
        return list(dict.fromkeys(f.file for f in self.audit.failures))

    def as_dict(self) -> dict[str, Any]:
        return {**self.audit.as_dict(), "policy": self.policy.describe(), "revocations": self.revocations,
                "failed_files": self.failed_files, "lineage_verified": self.lineage_verified}


def _release_policy(policy: str | Path | None, home: Path) -> TrustPolicy:
    """Who may sign releases: ``policy``, else ``$CAIRN_RELEASE_POLICY``, else ``HOME/release-policy.yaml``."""
    from integrity.settings import current

    path = Path(policy) if policy else current(home=home).release_policy
    if not path.is_file():
        raise UsageError(f"no release policy at {path}",
                         advice="Pass --release-policy release-policy.yaml or --key release.pub "
                                "(who may sign releases).")
    return load_policy(path)


def _peek(release: Path) -> ReleaseIndex | None:
    """The release's index as it claims itself (its signature is verified afterwards), if it parses."""
    try:
        return ReleaseIndex.read(release)
    except CairnError:
        return None


def _peek_model(release: Path, known: list[str] | None = None) -> str:
    """The model a release claims to be (its index says, else its folder name): verified afterwards."""
    index = _peek(release)
    if index is not None:
        return index.model
    candidates = sorted((m for m in known or [] if release.name.startswith(f"{m}-")), key=len, reverse=True)
    return candidates[0] if candidates else ""


def _peek_version(release: Path) -> str:
    """The version a release's index claims (verified afterwards), else empty."""
    index = _peek(release)
    return index.version if index is not None else ""


def revocation_store(release: Path, model: str, store: str | None, home: Path) -> tuple[str | None, str]:
    """Which store's revocations cover ``release``, and why that one.

    An explicit ``store`` wins; else the store this client pulled the release from (the pull state
    remembers it); else the configured store (``$CAIRN_STORE``, project file, ``HOME/store``).
    """
    from integrity.distribution import PullState
    from integrity.settings import current

    if store:
        return store, "given"
    settings = current(home=home)
    version = _peek_version(release)
    if model and version:
        origin = PullState(settings.pull_state).origin(f"{model}@{version}", release)
        if origin:
            return origin, "the store it was pulled from"
    configured = settings.store
    if settings.raw("store") is None and "://" not in configured and not Path(configured).is_dir():
        return None, "no store"
    return configured, f"the configured store ({settings.origin('store')})"


def _published_in(store: Any, model: str, version: str) -> bool:
    from integrity.distribution import publication_key

    try:
        return bool(model and version and store.has_key(publication_key(model, version)))
    except CairnError:
        return False


def key_policy(model: str, public_key: str | Path) -> TrustPolicy:
    """A one-entry release policy: ``model`` may be released by the holder of this key."""
    from integrity.trust.signing import key_fingerprint, load_public_key

    key = load_public_key(public_key)
    digest = "sha256:" + hashlib.sha256(Path(public_key).read_bytes()).hexdigest()
    return TrustPolicy(1, {model: SourcePolicy(model, AnyOf((PublicKey(key_fingerprint(key), key),)))}, None, digest)


def audit_release(
    release: str | Path,
    *,
    policy: str | Path | None = None,
    key: str | Path | None = None,
    store: str | None = None,
    home: Path | None = None,
    trusted_root: str | Path | None = None,
) -> AuditReport:
    from integrity.intake.catalog import cairn_home
    from integrity.storage import open_store

    path = Path(release)
    model = _peek_model(path)
    if key and policy:
        raise UsageError("choose --release-policy or --key, not both")
    home = home or cairn_home()
    if key:
        if not model:
            model = path.name.rsplit("-", 1)[0]
        trust = key_policy(model, key)
    else:
        trust = _release_policy(policy, home)
        model = model or _peek_model(path, list(trust.sources))
    revocations: RevocationList | None = None
    note = "not checked (no store given)"
    store_url, why = revocation_store(path, model, store, home)
    sources = revocation_stores(current(home=home).revocation_sources) if model in trust.sources else []
    if store_url and model and model in trust.sources:
        opened = open_store(store_url)
        authority = trust.source(model).signers
        consulted = consult(authority, RevocationList.load(opened, authority), opened.url,
                            [s for s in sources if s.url != opened.url])
        revocations = consulted.revocations
        note = f"checked against {len(revocations)} signed revocation(s) in {store_url} ({why})"
        if consulted.stores[1:]:
            note += f" and in the revocation source(s) {', '.join(consulted.stores[1:])} ($CAIRN_REVOCATIONS)"
        version = _peek_version(path)
        if why != "given" and not _published_in(opened, model, version) and len(consulted.stores) < 2:
            note += (f"; WARNING: {store_url} holds no publication of {model}@{version}, so revocations "
                     "written where it was published are not seen: pass --store or set $CAIRN_REVOCATIONS")
    elif sources and model:
        consulted = consult(trust.source(model).signers, None, None, sources)
        revocations = consulted.revocations
        note = f"checked against {consulted.describe()} (the revocation sources, $CAIRN_REVOCATIONS)"
    audit = audit_bundle(path, trust, model or None, revocations=revocations, trusted_root=trusted_root)
    lineage = None
    try:
        loaded = safeio.loads((path / "lineage.json").read_text(encoding="utf-8"))
        lineage = loaded if isinstance(loaded, dict) else None
    except (OSError, ValueError):
        lineage = None
    bad = {f.file for f in audit.failures}
    signed = {"lineage.json", "lineage.json.sig", INDEX_NAME, INDEX_SIGNATURE_NAME}
    verified = lineage is not None and not (signed & bad)
    return AuditReport(path, audit, trust, note, lineage, verified, datetime.now(UTC).isoformat())


def render_text(report: AuditReport) -> str:
    lines = [f"Release {report.path}"]
    index = report.audit.index or {}
    if index:
        lines.append(f"  model {index.get('model')} {index.get('version')} (sequence {index.get('sequence')}), "
                     f"created {index.get('created')}, model {index.get('model_digest')}")
        signer = index.get("signer") or {}
        lines.append(f"  signer {signer.get('method')} {signer.get('key_fingerprint') or signer.get('identity') or ''}")
    lines.append(f"  release policy {report.policy.path or 'pinned key'} ({report.policy.digest}); "
                 f"revocations {report.revocations}")
    if not report.ok:  # failures first, so they are read before anything that looks fine
        lines.append("")
        lines.append(f"!! {len(report.audit.failures)} FAILED CHECK(S):")
        lines += [f"!!   {f.file}: {f.check}: {f.detail}" for f in report.audit.failures]
    if index.get("inputs"):
        lines.append("")
        lines.append("Inputs (who signed each, by the policy rule it matched):")
        for item in index.get("inputs") or []:
            lines.append(f"  {item.get('name')} ({item.get('role', '')}): {item.get('signer', 'signer not recorded')}")
    lines.append("")
    lines.append("Lineage" + ("" if report.lineage_verified else " (UNVERIFIED: lineage.json did not verify)") + ":")
    if report.lineage:
        try:
            lines += ["  " + line for line in lineage_tree(report.lineage)]
        except (KeyError, TypeError, ValueError) as exc:
            lines.append(f"  unreadable lineage graph: {exc}")
    else:
        lines.append("  (no readable lineage.json)")
    lines.append("")
    lines.append("Checks:")
    for finding in report.audit.findings:
        mark = "ok  " if finding.passed else "FAIL"
        lines.append(f"  {mark} {finding.file}: {finding.check}: {finding.detail}")
    lines.append("")
    if report.ok:
        lines.append(f"AUDIT PASSED: every signature and digest in {report.path} verifies.")
    else:
        lines.append(f"AUDIT FAILED: {len(report.audit.failures)} check(s) failed in: {', '.join(report.failed_files)}")
    return "\n".join(lines)


def _table(headers: list[str], rows: list[list[Any]], failed: list[bool] | None = None) -> str:
    """An HTML table; rows marked in ``failed`` get the ``fail`` class (highlighted)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    marks = failed or [False] * len(rows)
    body = "".join(("<tr class='fail'>" if bad else "<tr>") + "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
                   + "</tr>" for row, bad in zip(rows, marks, strict=True))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _finding_row(finding: Finding) -> list[Any]:
    return ["ok" if finding.passed else "FAIL", finding.file, finding.check, finding.detail]


def render_html(report: AuditReport) -> str:
    """One self-contained HTML page: verdict, the graph (drawn from lineage.json), checks, inputs, documents."""
    esc = html.escape
    index = report.audit.index or {}
    verdict = "PASSED" if report.ok else "FAILED"
    color = "#137333" if report.ok else "#c5221f"
    graph = ""
    if report.lineage:
        try:
            graph = render_svg(report.lineage).decode()  # redrawn by Cairn: nothing from the bundle is inlined raw
        except (KeyError, TypeError, ValueError) as exc:
            graph = f"<p>unreadable lineage graph: {esc(str(exc))}</p>"
    inputs = [[i.get("name"), i.get("kind"), i.get("role", ""), i.get("signer", "(not recorded)"), i.get("digest"),
               i.get("used_digest", ""), i.get("verification_record"), i.get("policy_digest", "")]
              for i in index.get("inputs") or []]
    gates = [[name, gate.get("passed"), gate.get("reason", ""), gate.get("clean_accuracy", "")]
             for name, gate in (index.get("gates") or {}).items()]
    failures = report.audit.failures
    failure_list = "".join(f"<li><code>{esc(f.file)}</code>: {esc(f.check)}: {esc(f.detail)}</li>" for f in failures)
    documents = ""
    for name in ("provenance.intoto.json", "bom.cdx.json"):
        try:
            text = json.dumps(safeio.loads((report.path / name).read_text(encoding="utf-8")), indent=2)
        except (OSError, ValueError):
            text = "(unreadable)"
        ok = not any(f.file in (name, f"{name}.sig") for f in report.audit.failures)
        documents += (f"<details><summary>{esc(name)} ({'verified' if ok else 'DID NOT VERIFY'})</summary>"
                      f"<pre>{esc(text)}</pre></details>")
    signer = index.get("signer") or {}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Cairn audit: {esc(str(index.get('model', report.path.name)))}</title>
<style>
body {{ font-family: DejaVu Sans, Arial, sans-serif; margin: 24px; color: #202124; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 28px; }}
.verdict {{ display: inline-block; padding: 6px 12px; border-radius: 6px; color: white; background: {color}; }}
table {{ border-collapse: collapse; font-size: 12px; margin-top: 8px; }}
td, th {{ border: 1px solid #dadce0; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f1f3f4; }} pre {{ font-size: 11px; background: #f8f9fa; padding: 8px; overflow-x: auto; }}
.graph {{ overflow-x: auto; border: 1px solid #dadce0; padding: 8px; }}
tr.fail td {{ background: #fce8e6; color: #a50e0e; font-weight: bold; }}
.failures {{ border: 2px solid #c5221f; background: #fce8e6; padding: 8px 16px; }}
</style></head><body>
<h1>Cairn release audit: {esc(str(index.get('model', '?')))} {esc(str(index.get('version', '')))}</h1>
<p class="verdict" id="verdict">AUDIT {verdict}</p>
<p>Release <code>{esc(str(report.path))}</code>; model digest <code>{esc(str(index.get('model_digest', '?')))}</code>;
sequence {esc(str(index.get('sequence', '?')))}; created {esc(str(index.get('created', '?')))}.<br>
Signer: <code id="signer">{esc(str(signer.get('method', '?')))} {esc(str(signer.get('key_fingerprint')
    or signer.get('identity') or ''))}</code>. Release policy: <code>{esc(str(report.policy.path or 'pinned key'))}
</code> ({esc(report.policy.digest)}). Revocations: {esc(report.revocations)}. Audited {esc(report.created)}.</p>
{"" if report.ok else f"<div class='failures' id='failures'><h2>{len(failures)} failed check(s)</h2><ul>"
                       f"{failure_list}</ul></div>"}
<h2>Lineage{"" if report.lineage_verified else " (UNVERIFIED)"}</h2>
<div class="graph">{graph}</div>
<pre>{esc(chr(10).join(lineage_tree(report.lineage)) if report.lineage else "")}</pre>
<h2>Checks</h2>
{_table(["result", "file", "check", "detail"], [_finding_row(f) for f in report.audit.findings],
        [not f.passed for f in report.audit.findings])}
<h2>Inputs</h2>
{_table(["name", "kind", "role", "signer (policy rule it matched)", "digest", "used digest", "verification record",
          "trust policy"], inputs)}
<h2>Gates</h2>
{_table(["gate", "passed", "reason", "clean accuracy"], gates, [row[1] is not True for row in gates])}
<h2>Documents</h2>
{documents}
</body></html>
"""


# -- incident response: what else used a revoked input? -------------------------------------------------


@dataclass(frozen=True)
class Exposure:
    """A signed revocation and every published release that consumed what it revokes."""

    revocation: dict[str, Any]
    releases: tuple[dict[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return {"revocation": self.revocation, "releases": list(self.releases)}


def revoked_exposure(*, policy: str | Path | None = None, key: str | Path | None = None, model: str | None = None,
                     store: str | None = None, home: Path | None = None) -> list[Exposure]:
    """For every signed revocation in the store, the published releases that consumed its subject.

    Revocations are read with the release policy's signers as the authority and every release
    index's signature is checked (fail closed): the answer is trustworthy or an error.
    """
    from integrity.distribution import releases_consuming
    from integrity.intake.catalog import cairn_home
    from integrity.storage import open_store

    home = home or cairn_home()
    if key and policy:
        raise UsageError("choose --release-policy or --key, not both")
    if key:
        if not model:
            raise UsageError("--key needs --model (the release policy entry the key stands for)")
        trust = key_policy(model, key)
    else:
        trust = _release_policy(policy, home)
    store_url = store or current(home=home).store
    artifact_store = open_store(store_url)
    exposures: dict[tuple[str, str], Exposure] = {}
    for name in sorted(trust.sources):
        authority = trust.source(name).signers
        for revocation in RevocationList.load(artifact_store, authority).revocations:
            if (revocation.kind, revocation.subject) in exposures:
                continue
            consuming = releases_consuming(artifact_store, revocation.kind, revocation.subject, release_policy=trust)
            exposures[(revocation.kind, revocation.subject)] = Exposure(
                revocation.as_dict(), tuple(c.as_dict() for c in consuming))
    return list(exposures.values())


def render_exposure(exposures: list[Exposure]) -> str:
    if not exposures:
        return "No signed revocations in the store: no release is exposed."
    lines = []
    for exposure in exposures:
        r = exposure.revocation
        lines.append(f"REVOKED {r['kind']} {r['subject']} ({r['revokedAt']}): {r['reason']}")
        if not exposure.releases:
            lines.append("  no published release consumed it")
        for release in exposure.releases:
            lines.append(f"  consumed by {release['release']} (sequence {release['sequence']}): "
                         + "; ".join(release["matches"]))
    affected = sorted({rel["release"] for e in exposures for rel in e.releases})
    lines.append("")
    lines.append(f"{len(affected)} published release(s) consumed a revoked input: {', '.join(affected)}" if affected
                 else "No published release consumed a revoked input.")
    return "\n".join(lines)
