"""Label Studio's brush RLE, bit-exact with ``label_studio_converter.brush.encode_rle``.

Label Studio stores a brush mask as the run-length encoding (thi.ng ``rle-pack``) of the *flattened
RGBA image*: ``H × W × 4`` bytes in row-major order, one RGBA pixel after another. The bit stream is

* a header: the number of values (32 bits), ``wordsize - 1`` (5 bits) and the four run-length field
  sizes minus one (4 bits each) — always ``wordsize = 8`` and ``rle_sizes = [3, 4, 8, 16]`` here;
* one token per run of equal values: a flag bit (1 = repeated run, 0 = literal values), a 2-bit index
  into ``rle_sizes``, the run length minus one in that many bits, then the value(s) in ``wordsize``
  bits. The converter writes a run of 1 as a literal ``0 00 000 value``, runs of 2..8, 9..16 and
  17..256 as repeated runs with 3-, 4- and 8-bit lengths, and longer runs with 16-bit lengths, split
  into pieces of 65 536 (always with the 16-bit size, even for a short last piece);
* zero padding to a whole number of bytes — a *full* extra zero byte when the stream already ends on
  a byte boundary, exactly as the converter's ``8 - len % 8`` does.

The JSON value is the list of those bytes as integers. The decoder reads any stream the format allows
(literal runs of several values, other word and field sizes), as Label Studio's frontend does.

Encoding is vectorised over runs (no Python loop); decoding loops over tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

WORDSIZE = 8
RLE_SIZES = (3, 4, 8, 16)
#: Longest piece of one run written as one token (the 16-bit length field holds 65 535 = length - 1).
_MAX_PIECE = 2**16


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths and values of a 1-D array: ``((R,) int64, (R,) values)``."""
    if values.size == 0:
        return np.zeros(0, dtype=np.int64), values[:0]
    change = np.flatnonzero(values[1:] != values[:-1])
    ends = np.append(change, values.size - 1)
    lengths = np.diff(np.append(-1, ends))
    return lengths.astype(np.int64), values[ends]


def _encode_runs(lengths: np.ndarray, values: np.ndarray, num: int) -> list[int]:
    """Bit-packs runs into Label Studio's RLE bytes (see the module docstring).

    Args:
        lengths: ``(R,) int64`` run lengths (> 0), summing to ``num``.
        values: ``(R,)`` run values in ``0..255``.
        num: Number of values encoded.

    Returns:
        The bytes as a list of ints.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64)
    # Runs longer than 256 use the 16-bit size and are split into pieces of at most 65 536.
    big = lengths > 256
    n_full = np.where(big, (lengths - 1) // _MAX_PIECE, 0)
    reps = n_full + 1
    tok_run = np.repeat(np.arange(lengths.size), reps)
    first_of_run = np.cumsum(reps) - reps
    k = np.arange(tok_run.size) - first_of_run[tok_run]  # piece number within its run
    last = k == n_full[tok_run]
    tok_len = np.where(last, lengths[tok_run] - n_full[tok_run] * _MAX_PIECE, _MAX_PIECE)
    run_len = lengths[tok_run]
    flag = (run_len > 1).astype(np.int64)
    idx = np.select([run_len <= 8, run_len <= 16, run_len <= 256], [0, 1, 2], 3)
    size = np.asarray(RLE_SIZES, dtype=np.int64)[idx]
    width = 3 + size + WORDSIZE
    count = np.where(flag == 1, tok_len - 1, 0)  # a single value: literal of one, count field 0
    code = (flag << (2 + size + WORDSIZE)) | (idx << (size + WORDSIZE)) | (count << WORDSIZE) | values[tok_run]
    header = (num << 21) | ((WORDSIZE - 1) << 16)
    for j, s in enumerate(RLE_SIZES):
        header |= (s - 1) << (12 - 4 * j)
    codes = np.concatenate(([header], code))
    widths = np.concatenate(([32 + 5 + 16], width))
    total = int(widths.sum())
    pad = 8 - total % 8  # 1..8: a full zero byte when already aligned, as the converter does
    # Expand every token into its bits, most significant first.
    owner = np.repeat(np.arange(codes.size), widths)
    pos = np.arange(total) - np.repeat(np.cumsum(widths) - widths, widths)
    bits = (codes[owner] >> (widths[owner] - 1 - pos)) & 1
    bits = np.concatenate((bits, np.zeros(pad, dtype=np.int64))).astype(np.uint8)
    return np.packbits(bits).tolist()  # type: ignore[no-any-return]


def encode_rle(arr: Sequence[int] | np.ndarray) -> list[int]:
    """Encodes a flattened RGBA image as ``label_studio_converter.brush.encode_rle`` does.

    Args:
        arr: ``(N,)`` values in ``0..255`` (``H * W * 4`` for an RGBA image).

    Returns:
        The RLE bytes as a list of ints (the ``value.rle`` of a brush result).

    Raises:
        ValueError: values outside ``0..255`` or more than ``2**32 - 1`` values.
    """
    a = np.asarray(arr).reshape(-1)
    if a.size >= 2**32:
        raise ValueError(f"at most 2**32 - 1 values fit the 32-bit header, got {a.size}")
    if a.size and (int(a.min()) < 0 or int(a.max()) > 255):
        raise ValueError("brush RLE values must lie in 0..255")
    lengths, values = _runs(a)
    return _encode_runs(lengths, values, int(a.size))


def mask_to_rle(mask: np.ndarray, value: int = 255) -> list[int]:
    """Encodes a binary mask as a brush RLE without building the RGBA image.

    The RGBA image has every channel ``value`` on the mask and 0 elsewhere (white, opaque, as the
    converter's ``image2rle`` makes it): its runs are the mask's row-major runs times 4.

    Args:
        mask: ``(H, W) bool|uint8`` (non-zero = foreground).
        value: Channel value of foreground pixels.

    Returns:
        The RLE bytes as a list of ints, identical to ``encode_rle`` of the RGBA image.
    """
    flat = np.asarray(mask).astype(bool, copy=False).reshape(-1)
    lengths, values = _runs(flat)
    return _encode_runs(lengths * 4, np.where(values, value, 0), 4 * flat.size)


class _Bits:
    """Reads big-endian bit fields from a byte string."""

    def __init__(self, data: bytes) -> None:
        self.bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).tobytes()
        self.i = 0

    def read(self, n: int) -> int:
        if self.i + n > len(self.bits):
            raise ValueError("brush RLE ends in the middle of a value")
        v = 0
        for b in self.bits[self.i : self.i + n]:
            v = (v << 1) | b
        self.i += n
        return v


def decode_rle(rle: Sequence[int] | bytes) -> np.ndarray:
    """Decodes Label Studio's brush RLE to the flat values it encodes.

    Args:
        rle: The bytes, as a list of ints (the JSON value) or ``bytes``.

    Returns:
        ``(N,)`` array: ``uint8`` for word sizes up to 8, wider otherwise (as the frontend does).

    Raises:
        ValueError: a truncated stream, or runs that overflow the stated length.
    """
    data = bytes(rle) if not isinstance(rle, bytes) else rle
    r = _Bits(data)
    num = r.read(32)
    word = r.read(5) + 1
    sizes = [r.read(4) + 1 for _ in range(4)]
    dtype = np.uint8 if word <= 8 else (np.uint16 if word <= 16 else np.uint32)
    out = np.zeros(num, dtype=dtype)
    i = 0
    while i < num:  # one iteration per token
        repeated = r.read(1)
        j = i + 1 + r.read(sizes[r.read(2)])
        if j > num:
            raise ValueError(f"brush RLE run overflows the stated length {num}")
        if repeated:
            out[i:j] = r.read(word)
        else:
            out[i:j] = [r.read(word) for _ in range(j - i)]
        i = j
    return out


def rle_to_mask(rle: Sequence[int] | bytes, height: int, width: int) -> np.ndarray:
    """Decodes a brush RLE to its ``(height, width) bool`` mask (alpha channel > 0, as the converter).

    Raises:
        ValueError: the RLE does not hold ``height × width`` RGBA pixels.
    """
    flat = decode_rle(rle)
    if flat.size != height * width * 4:
        raise ValueError(f"brush RLE holds {flat.size} values, expected {height}x{width}x4 = {height * width * 4}")
    return flat.reshape(height, width, 4)[:, :, 3] > 0
