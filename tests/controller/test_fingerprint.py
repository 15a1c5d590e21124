"""Which profiles describe the model: by the artefact's digest when the spec pins one,
else by the descriptive fields."""

from __future__ import annotations

import dataclasses

from serflow.inference import fingerprint_mismatch, parse_inference
from serflow.spec import parse_workload
from tests.controller.manifests import manifest

DIGEST = "ab" * 32


def _case(model_digest: str = "", profile_digest: str = "", **fp: object) -> str:
    m = manifest()
    if model_digest:
        m["spec"]["model"]["artefact"] = {"digest": model_digest}
    inf = parse_inference(m["spec"], "vgg")
    profile = parse_workload(manifest()).profile
    fingerprint = dataclasses.replace(profile.fingerprint, artefact_digest=profile_digest, **fp)
    return fingerprint_mismatch(inf.model, dataclasses.replace(profile, fingerprint=fingerprint))


def test_descriptive_fields_match_without_a_pinned_artefact() -> None:
    assert _case() == ""
    assert _case(width=0.5) == "profile width 0.5 does not match the model's 0.25"


def test_a_pinned_artefact_is_matched_by_its_digest_alone() -> None:
    assert _case(DIGEST, DIGEST) == ""
    # the descriptive fields do not matter once the digest says what the model is
    assert _case(DIGEST, DIGEST, architecture="resnet8", width=0.5) == ""


def test_another_or_no_digest_is_refused() -> None:
    assert _case(DIGEST, "cd" * 32) == (
        "profile artefactDigest cdcdcdcdcdcd... does not match the model's abababababab..."
    )
    assert _case(DIGEST, "") == "profile artefactDigest none does not match the model's abababababab..."
