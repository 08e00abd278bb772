"""The real Dagster webserver, serving workspace.yaml on a loopback port: through its GraphQL API
an auditor finds the asset graph, the gate check results and a failed source's quarantine reason."""

import itertools
import json
import shutil
import urllib.request

import pytest

from pipelines.demo import materialize_catalog
from pipelines.instance import dagster_home
from pipelines.staging import stage_demo
from tests.support.webserver import WEBSERVER, running_webserver

ASSET_GRAPH = """
query {
  assetNodes {
    assetKey { path }
    groupName
    dependencyKeys { path }
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
  }
}
"""

SOURCE_DETAIL = """
query ($path: [String!]!) {
  assetNodes(assetKeys: [{path: $path}]) {
    assetKey { path }
    assetMaterializations(limit: 1) {
      runId
      metadataEntries { label ... on TextMetadataEntry { text } }
    }
    assetChecksOrError {
      ... on AssetChecks {
        checks {
          name
          blocking
          executionForLatestMaterialization {
            status
            evaluation { success severity metadataEntries { label ... on TextMetadataEntry { text } } }
          }
        }
      }
    }
  }
}
"""


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        data = json.loads(response.read())
    assert "errors" not in data, data.get("errors")
    return data["data"]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory):
    if not WEBSERVER.exists():
        pytest.skip(f"dagster-webserver not installed at {WEBSERVER}")
    home = stage_demo(tmp_path_factory.mktemp("home"))
    materialize_catalog(home)
    env = {"CAIRN_HOME": str(home), "DAGSTER_HOME": str(dagster_home(home))}
    try:
        with running_webserver(env, home / "webserver.log", start_timeout=120) as port:
            yield port, home
    finally:
        shutil.rmtree(home / "work" / ".reverify", ignore_errors=True)


def test_asset_graph_is_served(webserver) -> None:
    port, _ = webserver
    nodes = {tuple(n["assetKey"]["path"]): n for n in _graphql(port, ASSET_GRAPH)["assetNodes"]}
    chain = [("breast_cancer", s) for s in ("fetched", "verified", "validated", "attested")]
    assert all(key in nodes for key in chain)
    for upstream, downstream in itertools.pairwise(chain):
        assert list(upstream) in [d["path"] for d in nodes[downstream]["dependencyKeys"]]
    assert nodes[("efficientnet_lite0", "attested")]["groupName"] == "efficientnet_lite0"  # one group per source
    checks = nodes[("breast_cancer", "verified")]["assetChecksOrError"]["checks"]
    assert {"name": "signature_verified", "blocking": True} in checks


def _entries(entries: list[dict]) -> dict[str, str]:
    return {e["label"]: e.get("text") for e in entries}


def test_check_results_and_quarantine_reason(webserver) -> None:
    port, _ = webserver
    good = _graphql(port, SOURCE_DETAIL, {"path": ["digits", "attested"]})["assetNodes"][0]
    check = good["assetChecksOrError"]["checks"][0]
    assert check["executionForLatestMaterialization"]["evaluation"]["success"] is True

    failed = _graphql(port, SOURCE_DETAIL, {"path": ["breast_cancer_mirror", "verified"]})["assetNodes"][0]
    check = next(c for c in failed["assetChecksOrError"]["checks"] if c["name"] == "signature_verified")
    evaluation = check["executionForLatestMaterialization"]["evaluation"]
    assert evaluation["success"] is False and evaluation["severity"] == "ERROR"
    assert "content differs from what was signed" in _entries(evaluation["metadataEntries"])["reason"]
    metadata = _entries(failed["assetMaterializations"][0]["metadataEntries"])
    assert metadata["status"] == "quarantined"
    assert "changed: breast_cancer.csv" in metadata["reason"]
    assert metadata["quarantine_id"]

    # Downstream of the failed gate never materialized.
    blocked = _graphql(port, SOURCE_DETAIL, {"path": ["breast_cancer_mirror", "attested"]})["assetNodes"][0]
    assert blocked["assetMaterializations"] == []
