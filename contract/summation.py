"""The fixed summation tree of the K-FAC sums, so any batch size and any sharding add up bit for bit.

float32 addition is not associative, so "the same sum" needs one fixed order of additions. The
calibration stream (the packed rows, ``stream_rows`` of them) is cut, independently of how it is
batched or sharded, into:

* units: ``ROWS_PER_UNIT`` consecutive rows (unit ``u`` = rows ``[u R, (u + 1) R)`` of the
  stream; the last one may be shorter). A unit's contribution to a factor is ONE matrix product
  over all of its valid positions, in row order (``workers.curvature.factors``);
* segments: ``SUM_SEGMENTS`` contiguous runs of whole units (``segment_bounds``; some are empty
  when the stream has fewer units than segments). Each segment's sum starts from zero and adds
  its units in order; the total is ``((0 + S_0) + S_1) + ...`` in segment order.

A shard (``shard_segments``) is a contiguous run of whole segments, so at most ``SUM_SEGMENTS``
shards; it returns its segments' sums separately and the reduce adds all segments in order --
the same additions as one unsharded pass. This module is torch-free: the settings validation and
the preflight read it too.
"""

from __future__ import annotations

ROWS_PER_UNIT = 8  # rows (sequences or images) per accumulation product
SUM_SEGMENTS = 8  # segments of the stream; also the most shards a collection can use
SUM_ORDER = f"units{ROWS_PER_UNIT}-segments{SUM_SEGMENTS}-v1"  # in the factor-cache key of every sum


def _check_rows(stream_rows: int) -> None:
    if stream_rows < 0:
        raise ValueError(f"expected stream_rows >= 0, got {stream_rows}")


def stream_units(stream_rows: int) -> int:
    """Number of units of a stream of ``stream_rows`` rows."""
    _check_rows(stream_rows)
    return -(-stream_rows // ROWS_PER_UNIT)


def segment_bounds(stream_rows: int) -> list[int]:
    """Row boundaries ``[b_0 = 0, ..., b_SUM_SEGMENTS = stream_rows]``: segment ``s`` is rows
    ``[b_s, b_{s+1})``, whole units, near-equal unit counts (empty when ``b_s == b_{s+1}``)."""
    units = stream_units(stream_rows)
    return [min(stream_rows, ROWS_PER_UNIT * (s * units // SUM_SEGMENTS)) for s in range(SUM_SEGMENTS + 1)]


def segment_of_row(bounds: list[int], row: int) -> int:
    """The segment holding ``row`` (``0 <= row < bounds[-1]``); empty segments never hold one."""
    if not 0 <= row < bounds[-1]:
        raise ValueError(f"expected a row in [0, {bounds[-1]}), got {row}")
    seg = 0
    while bounds[seg + 1] <= row:
        seg += 1
    return seg


def check_shards(shards: int) -> None:
    if not 1 <= shards <= SUM_SEGMENTS:
        raise ValueError(f"expected 1 <= shards <= {SUM_SEGMENTS} (a shard is whole summation segments), got {shards}")


def shard_segments(shards: int, shard: int) -> range:
    """The segments of shard ``shard`` of ``shards`` (contiguous, near-equal counts)."""
    check_shards(shards)
    if not 0 <= shard < shards:
        raise ValueError(f"expected 0 <= shard < {shards}, got {shard}")
    return range(shard * SUM_SEGMENTS // shards, (shard + 1) * SUM_SEGMENTS // shards)


def shard_span(stream_rows: int, shards: int, shard: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of shard ``shard`` of ``shards``: the union of its segments."""
    segs = shard_segments(shards, shard)
    bounds = segment_bounds(stream_rows)
    return bounds[segs.start], bounds[segs.stop]
