"""Product image route: `GET /product-images/{zoho_item_id}.jpg` (and HEAD), with single byte ranges."""

from __future__ import annotations

from robyn import Headers

from server.encoding import etag_matches
from server.http import Call, Reply, Route
from server.images.ranges import byte_range, http_date, if_range_allows
from server.images.service import ImageFile
from server.params import Param
from server.state import AppState

IMAGE_NAME = Param(
    "name",
    "raw",
    location="path",
    pattern=r"[A-Za-z0-9_-]{1,64}\.jpg",
    description="`{zoho_item_id}.jpg`; any other name is 404",
)
JPEG = "image/jpeg"


def _not_modified(headers: Headers, img: ImageFile) -> bool:
    # The wrapper's 304 rule (If-None-Match, else If-Modified-Since): a 304 wins over a Range.
    inm = headers.get("if-none-match")
    if inm is not None:
        return etag_matches(inm, img.etag)
    ims = headers.get("if-modified-since")
    if not ims:
        return False
    since, ours = http_date(ims), http_date(img.last_modified)
    try:
        return since is not None and ours is not None and ours <= since
    except TypeError:  # a date without a zone cannot be compared with ours
        return False


def routes(state: AppState) -> list[Route]:
    """The image endpoint."""
    cache_control = f"public, max-age={state.settings.IMAGE_MAX_AGE_S}"

    async def get_image(call: Call) -> Reply:
        img = await state.image_store.get(call.params["name"])
        headers = {"Last-Modified": img.last_modified, "Accept-Ranges": "bytes"}
        range_header = call.headers.get("range")
        if (
            range_header is not None
            and not _not_modified(call.headers, img)
            and if_range_allows(call.headers.get("if-range"), img.etag, img.last_modified)
        ):
            span = byte_range(range_header, len(img.body))
            if span is not None:
                first, last = span
                headers["ETag"] = img.etag
                headers["Content-Range"] = f"bytes {first}-{last}/{len(img.body)}"
                return Reply(
                    img.body[first : last + 1],
                    status=206,
                    content_type=JPEG,
                    headers=headers,
                    conditional=False,
                    cache_control=cache_control,
                    compressible=False,
                )
        return Reply(
            img.body,
            content_type=JPEG,
            etag=img.etag,
            compressible=False,
            headers=headers,
            cache_control=cache_control,
        )

    return [
        Route(
            "GET",
            "/product-images/:name",
            get_image,
            (IMAGE_NAME,),
            summary="A product's image (JPEG); a single `Range: bytes=…` gives 206",
            tag="images",
            group="images",
            content_type=JPEG,
            errors=(404, 416),
            ranges=True,
            any_query=True,  # cache-busting queries (`?v=2`) are ignored, not rejected
        ),
    ]
