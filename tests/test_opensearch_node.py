"""The real OpenSearch node the suite runs against (tests/opensearch_node.py): it answers, it is the version
`make opensearch` fetches, and documents round-trip through the opensearch-py client the product uses."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from opensearchpy import OpenSearch


@pytest.fixture
def client(opensearch_url: str) -> Iterator[OpenSearch]:
    client = OpenSearch(hosts=[opensearch_url], timeout=30)
    try:
        yield client
    finally:
        client.close()


@pytest.mark.integration
def test_index_and_search_round_trip(client: OpenSearch) -> None:
    info = client.info()
    assert info["version"]["distribution"] == "opensearch"
    assert info["version"]["number"].startswith("2."), info["version"]
    assert client.cluster.health()["status"] in ("yellow", "green")

    index = f"mise-node-check-{uuid.uuid4().hex[:8]}"
    client.indices.create(
        index=index,
        body={
            "settings": {
                "number_of_shards": 1,
                "number_of_replicas": 0,
                # The pattern tokenizer and asciifolding come from the analysis-common module make adds.
                "analysis": {
                    "tokenizer": {"words": {"type": "pattern", "pattern": "[^\\p{L}\\p{N}']+"}},
                    "analyzer": {
                        "folded": {"type": "custom", "tokenizer": "words", "filter": ["lowercase", "asciifolding"]}
                    },
                },
            },
            "mappings": {"properties": {"text": {"type": "text", "analyzer": "folded"}, "call": {"type": "keyword"}}},
        },
    )
    try:
        client.index(index=index, id="1", body={"text": "Le café est crème", "call": "c-1"}, refresh=True)
        client.index(index=index, id="2", body={"text": "nothing to see here", "call": "c-2"}, refresh=True)

        hits = client.search(index=index, body={"query": {"match_phrase": {"text": "cafe est creme"}}})["hits"]
        assert hits["total"]["value"] == 1
        assert hits["hits"][0]["_id"] == "1"
        assert hits["hits"][0]["_source"]["call"] == "c-1"
    finally:
        client.indices.delete(index=index)
