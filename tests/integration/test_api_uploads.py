"""Multipart limits with multer's messages (spec §2.4), and uploads reaching the model."""

from __future__ import annotations

import io

from PIL import Image

from tests.conftest import Gateway

IMAGE = "/v1/openai/images/generations"
VIDEO = "/v1/openai/videos/generations"
FIELDS = {"model": "test/test", "prompt": "Add a hat to the person", "response_format": "b64_json"}


def png(color: tuple[int, int, int] = (0, 0, 0), size: tuple[int, int] = (8, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


async def test_edit_with_one_image(gateway: Gateway) -> None:
    _, key = await gateway.account()
    for path in (IMAGE, "/v1/openai/images/edits"):
        response = await gateway.post(
            path, key, data=FIELDS, files={"image": ("in.png", png(), "image/png")}
        )
        assert response.status_code == 200, response.text
        assert response.json()["data"][0]["b64_json"]


async def test_seventeen_images_are_an_unexpected_field(gateway: Gateway) -> None:
    _, key = await gateway.account()
    files = [("image[]", (f"{i}.png", png(), "image/png")) for i in range(17)]
    response = await gateway.post(IMAGE, key, data=FIELDS, files=files)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "File upload error: Unexpected field"


async def test_sixteen_images_are_accepted(gateway: Gateway) -> None:
    _, key = await gateway.account()
    files = [("image[]", (f"{i}.png", png(), "image/png")) for i in range(16)]
    response = await gateway.post(IMAGE, key, data=FIELDS, files=files)
    assert response.status_code == 200


async def test_two_masks_and_unknown_fields_are_refused(gateway: Gateway) -> None:
    _, key = await gateway.account()
    two_masks = [("mask", ("m.png", png(), "image/png")), ("mask", ("n.png", png(), "image/png"))]
    for files in (two_masks, [("photo", ("p.png", png(), "image/png"))]):
        response = await gateway.post(IMAGE, key, data=FIELDS, files=files)
        assert response.status_code == 400
        assert response.json()["error"]["message"] == "File upload error: Unexpected field"


async def test_video_takes_no_mask(gateway: Gateway) -> None:
    _, key = await gateway.account()
    response = await gateway.post(
        VIDEO, key, data={"model": "ir/test-video"}, files={"mask": ("m.png", png(), "image/png")}
    )
    assert response.json()["error"]["message"] == "File upload error: Unexpected field"


async def test_file_over_25_mb_is_too_large(gateway: Gateway) -> None:
    _, key = await gateway.account()
    big = b"\x89PNG" + b"\0" * (25 * 1024 * 1024)
    response = await gateway.post(IMAGE, key, data=FIELDS, files={"image": ("big.png", big)})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "File upload error: File too large"


async def test_indexed_image_fields_are_accepted(gateway: Gateway) -> None:
    _, key = await gateway.account()
    files = [
        ("image[0]", ("a.png", png(), "image/png")),
        ("image[1]", ("b.png", png(), "image/png")),
    ]
    response = await gateway.post(IMAGE, key, data=FIELDS, files=files)
    assert response.status_code == 200
    [row] = await gateway.rows("SELECT input_types FROM generations")
    assert "IMAGE" in str(row["input_types"])


async def test_images_and_mask_are_forwarded_to_openai(gateway: Gateway) -> None:
    _, key = await gateway.account("1")
    red, blue, mask = png((255, 0, 0)), png((0, 0, 255)), png((255, 255, 255))
    files = [
        ("image[]", ("red.png", red, "image/png")),
        ("image[]", ("blue.png", blue, "image/png")),
        ("mask", ("mask.png", mask, "image/png")),
    ]
    response = await gateway.post(
        IMAGE, key, data={"model": "openai/gpt-image-1", "prompt": "merge"}, files=files
    )
    assert response.status_code == 200, response.text
    sent = gateway.openai.last
    assert sent.path.endswith("/images/edits")
    assert [f.data for f in sent.files_named("image[]")] == [red, blue]
    assert [f.data for f in sent.files_named("mask")] == [mask]


async def test_image_upload_to_a_text_only_route_is_refused_before_charging(
    gateway: Gateway,
) -> None:
    account, key = await gateway.account("1")
    response = await gateway.post(
        IMAGE,
        key,
        data={"model": "openai/dall-e-3", "prompt": "x"},
        files={"image": ("a.png", png(), "image/png")},
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "This model does not support image inputs"
    assert await gateway.ledger_sum(account) == await gateway.balance(account) == 10_000


async def test_free_model_image_limit_has_its_own_message(vendors_gateway: Gateway) -> None:
    """FLUX-2-klein-4b:free takes one reference image; the message names the paid model."""
    _, key = await vendors_gateway.account("1")
    files = [("image[]", (f"{i}.png", png(), "image/png")) for i in range(2)]
    response = await vendors_gateway.post(
        IMAGE,
        key,
        data={"model": "black-forest-labs/FLUX-2-klein-4b:free", "prompt": "x"},
        files=files,
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "Free model only supports one input image. Please use the paid model "
        "'black-forest-labs/FLUX-2-klein-4b' which can handle up to 4 reference images."
    )
    assert vendors_gateway.fakes["runware"].requests == []


async def test_runware_edit_sends_reference_images(vendors_gateway: Gateway) -> None:
    _, key = await vendors_gateway.account("1")
    files = [("image[]", (f"{i}.png", png((i * 60, 0, 0)), "image/png")) for i in range(3)]
    response = await vendors_gateway.post(
        IMAGE,
        key,
        data={"model": "black-forest-labs/FLUX-2-pro", "prompt": "merge them"},
        files=files,
    )
    assert response.status_code == 200, response.text
    [submitted] = [r for r in vendors_gateway.fakes["runware"].requests if r.method == "POST"]
    [task] = submitted.json
    assert len(task["inputs"]["referenceImages"]) == 3
    assert task["inputs"]["referenceImages"][0].startswith("data:image/png;base64,")
