"""The `review` label through the real gateway: weaker evidence of a minor beside explicit content is
recorded and counted, passes by default, and rejects when an admin lists it."""

from __future__ import annotations

import httpx

from support.detectors import ScoreDetector
from support.images import drawn_png


def makers() -> tuple[object, object]:
    # 20 ± 5: a minor only within one standard deviation, i.e. weak evidence.
    return (
        lambda: ScoreDetector("nudity", {"explicit": 0.9}, notes=["test_class 0.90"]),
        lambda: ScoreDetector("age", {"faces": 1, "min_age": 20, "min_age_sd": 5}),
    )


def test_review_is_recorded_counted_and_passes_by_default(gateway_for) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_for(*makers())
    response = gw.post(drawn_png())
    assert response.status_code == 200
    body = response.json()
    assert body["verdict"] == "pass" and body["labels"] == ["nsfw", "review"]
    record = gw.store.get(body["id"])
    assert record is not None and record.labels == ("nsfw", "review")
    assert "a minor only within 1 x its uncertainty" in record.reasons[1]
    assert 'fediguard_labels_total{label="review"} 1.0' in httpx.get(f"{gw.url}/metrics").text


def test_review_rejects_when_listed(gateway_for) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_for(*makers(), reject_labels="csam_suspect,denylisted,review")
    response = gw.post(drawn_png())
    assert response.status_code == 406 and response.json()["labels"] == ["nsfw", "review"]
