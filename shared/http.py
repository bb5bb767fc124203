"""HTTP conventions every service shares: ETags from versions, If-Match checks."""

from __future__ import annotations

from flask import request

from shared.problems import Problem


def etag(version: int) -> str:
    """The ETag of a resource at ``version`` (a strong validator)."""
    return f'"{version}"'


def require_if_match(version: int) -> None:
    """Updates name the version they were based on: 428 without If-Match, 412 when
    the resource has changed since."""
    header = request.headers.get("If-Match")
    if not header:
        raise Problem(
            428,
            "Send If-Match with the ETag of the version you changed, from a GET.",
            slug="if-match-required",
        )
    wanted = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    if "*" in wanted or etag(version) in wanted:
        return
    raise Problem(
        412,
        f"The resource has changed (now version {version}); read it again and re-apply "
        "your change.",
        slug="stale-version",
        headers={"ETag": etag(version)},
        current_version=version,
    )
