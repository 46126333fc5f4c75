"""Product image route: `GET /product-images/{zoho_item_id}.jpg`."""

from __future__ import annotations

from server.http import Call, Reply, Route
from server.params import Param
from server.state import AppState

IMAGE_NAME = Param(
    "name",
    "raw",
    location="path",
    pattern=r"[A-Za-z0-9_-]{1,64}\.jpg",
    description="`{zoho_item_id}.jpg`; any other name is 404",
)


def routes(state: AppState) -> list[Route]:
    """The image endpoint."""
    max_age = state.settings.IMAGE_MAX_AGE_S

    async def get_image(call: Call) -> Reply:
        img = await state.image_store.get(call.params["name"])
        return Reply(
            img.body,
            content_type="image/jpeg",
            etag=img.etag,
            compressible=False,
            headers={"Last-Modified": img.last_modified},
            cache_control=f"public, max-age={max_age}",
        )

    return [
        Route(
            "GET",
            "/product-images/:name",
            get_image,
            (IMAGE_NAME,),
            summary="A product's image (JPEG)",
            tag="images",
            group="images",
            content_type="image/jpeg",
            errors=(404,),
        ),
    ]
