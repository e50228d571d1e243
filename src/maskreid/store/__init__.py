"""Parquet image shards and the mask cache."""

from maskreid.store.shards import (  # noqa: F401
    IMAGE_SCHEMA,
    METADATA_COLUMNS,
    CorruptImageError,
    decode_image,
    decode_mask,
    encode_png,
    read_frame,
    read_table,
    sha256_bytes,
    write_shards,
)
