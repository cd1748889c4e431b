"""The Douyin (抖音) creator-site adapter. Written from public knowledge of the site; it could
not be checked against the live site from the project's build machines (see the README)."""
