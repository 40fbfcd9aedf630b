"""Xet object formats for the test hub: xorbs (chunk headers, LZ4 and ByteGrouping4LZ4 chunks,
the optional XorbObjectInfo footer) and shards (header, file info, CAS info, footer), parsed
strictly and every hash recomputed (https://huggingface.co/docs/xet/xorb, .../shard).

A XetFormatError names the first thing that is wrong; the hub answers it as 400.
"""

import ctypes
import ctypes.util
import struct
import time

import xet_hash as xh

try:  # python3-lz4 where this interpreter sees it; else liblz4 or our own decoder below
    import lz4.frame as _lz4frame
except ImportError:  # pragma: no cover - depends on the interpreter
    _lz4frame = None


def _load_liblz4():
    """The system liblz4 (by soname) for block decoding; None leaves the Python decoder."""
    name = ctypes.util.find_library("lz4")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
        fn = lib.LZ4_decompress_safe_usingDict
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                   ctypes.c_char_p, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_liblz4_block = _load_liblz4() if _lz4frame is None else None

CHUNK_HEADER = 8
MAX_CHUNK = 128 * 1024
XORB_MAX = 64 * 1024 * 1024
SCHEME_NONE, SCHEME_LZ4, SCHEME_BG4_LZ4 = 0, 1, 2
LZ4_FRAME_MAGIC = 0x184D2204

SHARD_TAG = bytes(b"HFRepoMetaData" + bytes([0, 85, 105, 103, 69, 106, 123, 129, 87, 131, 165,
                                             189, 217, 92, 205, 209, 74, 169]))
SHARD_HEADER_VERSION = 2
SHARD_FOOTER_VERSION = 1
SHARD_FOOTER_SIZE = 200
ENTRY = 48
BOOKEND = b"\xff" * 32 + bytes(16)
FLAG_VERIFICATION = 0x80000000
FLAG_METADATA_EXT = 0x40000000


class XetFormatError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# LZ4 (frame format, as xet-core and the JS client write it)


def _lz4_block(src, out, limit):
    """Decode one LZ4 block from src, appending to bytearray out (which holds the window)."""
    i, n = 0, len(src)
    while i < n:
        token = src[i]
        i += 1
        lit = token >> 4
        if lit == 15:
            while True:
                if i >= n:
                    raise XetFormatError("LZ4 block truncated in a literal length")
                b = src[i]
                i += 1
                lit += b
                if b != 255:
                    break
        if i + lit > n:
            raise XetFormatError("LZ4 block truncated in literals")
        out += src[i:i + lit]
        i += lit
        if i == n:
            break
        if i + 2 > n:
            raise XetFormatError("LZ4 block truncated in a match offset")
        off = src[i] | (src[i + 1] << 8)
        i += 2
        if off == 0 or off > len(out):
            raise XetFormatError(f"LZ4 match offset {off} outside the decoded data")
        mlen = token & 15
        if mlen == 15:
            while True:
                if i >= n:
                    raise XetFormatError("LZ4 block truncated in a match length")
                b = src[i]
                i += 1
                mlen += b
                if b != 255:
                    break
        mlen += 4
        if len(out) + mlen > limit:
            raise XetFormatError("LZ4 data decodes to more than the chunk header says")
        start = len(out) - off
        if mlen <= off:
            out += out[start:start + mlen]
        else:  # overlapping copy: the last `off` bytes repeat
            pat = bytes(out[start:])
            out += (pat * (mlen // off + 1))[:mlen]
        if len(out) > limit:
            raise XetFormatError("LZ4 data decodes to more than the chunk header says")


def lz4_frame_decompress(data, limit):
    if _lz4frame is not None:
        try:
            out = _lz4frame.decompress(bytes(data))
        except RuntimeError as e:
            raise XetFormatError(f"LZ4 frame does not decode: {e}")
        if len(out) > limit:
            raise XetFormatError("LZ4 data decodes to more than the chunk header says")
        return out
    if len(data) < 7 or struct.unpack_from("<I", data, 0)[0] != LZ4_FRAME_MAGIC:
        raise XetFormatError("LZ4 chunk is not an LZ4 frame (bad magic number)")
    flg = data[4]
    if flg >> 6 != 1:
        raise XetFormatError("LZ4 frame version is not 01")
    i = 6 + (8 if flg & 0x08 else 0) + (4 if flg & 0x01 else 0) + 1
    out = bytearray()
    while True:
        if i + 4 > len(data):
            raise XetFormatError("LZ4 frame truncated (no end mark)")
        bsize = struct.unpack_from("<I", data, i)[0]
        i += 4
        if bsize == 0:
            break
        raw = bsize & 0x80000000
        bsize &= 0x7FFFFFFF
        if i + bsize > len(data):
            raise XetFormatError("LZ4 frame truncated in a block")
        blk = data[i:i + bsize]
        i += bsize + (4 if flg & 0x10 else 0)
        if raw:
            out += blk
        elif _liblz4_block is not None:
            room = limit - len(out)
            dst = ctypes.create_string_buffer(max(room, 1))
            window = bytes(out[-65536:])
            n = _liblz4_block(bytes(blk), dst, len(blk), room, window, len(window))
            if n < 0:
                raise XetFormatError("LZ4 block does not decode (or decodes to more than the "
                                     "chunk header says)")
            out += dst.raw[:n]
        else:
            _lz4_block(blk, out, limit)
        if len(out) > limit:
            raise XetFormatError("LZ4 data decodes to more than the chunk header says")
    return bytes(out)


def bg4_regroup(data):
    """Undo byte grouping: groups of every 4th byte back into interleaved order."""
    n = len(data)
    q, r = divmod(n, 4)
    sizes = [q + (1 if g < r else 0) for g in range(4)]
    out = bytearray(n)
    pos = 0
    for g in range(4):
        out[g::4] = data[pos:pos + sizes[g]]
        pos += sizes[g]
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# xorbs


class Xorb:
    """A verified xorb: hash, chunk hashes and lengths, and each chunk's byte range."""

    def __init__(self, hash_, chunks, offsets, packed_len):
        self.hash = hash_
        self.chunks = chunks  # [(hash raw, unpacked length)]
        self.offsets = offsets  # byte offset of each chunk's header, plus the end
        self.packed_len = packed_len  # chunk stream length (without any footer)

    @property
    def unpacked_len(self):
        return sum(n for _, n in self.chunks)


def decode_chunk(buf, off, index):
    """(data, next offset) of the chunk whose header starts at off."""
    if off + CHUNK_HEADER > len(buf):
        raise XetFormatError(f"chunk {index}: truncated header at byte {off}")
    ver = buf[off]
    clen = buf[off + 1] | (buf[off + 2] << 8) | (buf[off + 3] << 16)
    scheme = buf[off + 4]
    ulen = buf[off + 5] | (buf[off + 6] << 8) | (buf[off + 7] << 16)
    if ver != 0:
        raise XetFormatError(f"chunk {index}: header version {ver}, expected 0")
    if ulen > MAX_CHUNK:
        raise XetFormatError(f"chunk {index}: {ulen} bytes uncompressed, above 128 KiB")
    start = off + CHUNK_HEADER
    if start + clen > len(buf):
        raise XetFormatError(f"chunk {index}: {clen} compressed bytes announced, only "
                             f"{len(buf) - start} left")
    payload = buf[start:start + clen]
    if scheme == SCHEME_NONE:
        if clen != ulen:
            raise XetFormatError(f"chunk {index}: uncompressed chunk with sizes {clen} and "
                                 f"{ulen}")
        data = bytes(payload)
    elif scheme in (SCHEME_LZ4, SCHEME_BG4_LZ4):
        data = lz4_frame_decompress(payload, ulen)
        if scheme == SCHEME_BG4_LZ4:
            data = bg4_regroup(data)
    else:
        raise XetFormatError(f"chunk {index}: unknown compression scheme {scheme}")
    if len(data) != ulen:
        raise XetFormatError(f"chunk {index}: decodes to {len(data)} bytes, header says {ulen}")
    return data, start + clen


def parse_xorb(buf, claimed_hex=None):
    """Parse and verify a serialized xorb; XetFormatError on any inconsistency."""
    if len(buf) > XORB_MAX:
        raise XetFormatError(f"xorb is {len(buf)} bytes, above the 64 MiB limit")
    chunks, offsets = [], []
    off = 0
    # chunk headers start with version 0; the footer starts with "XETBLOB"
    while off < len(buf) and buf[off] == 0:
        offsets.append(off)
        data, off = decode_chunk(buf, off, len(chunks))
        chunks.append((xh.chunk_hash(data), len(data)))
    offsets.append(off)
    if not chunks:
        raise XetFormatError("xorb holds no chunk")
    hash_ = xh.xorb_hash(chunks)
    if off < len(buf):
        check_xorb_footer(buf, off, hash_, chunks, offsets)
    if claimed_hex is not None and xh.to_hex(hash_) != claimed_hex:
        raise XetFormatError(f"xorb hash mismatch: the chunks hash to {xh.to_hex(hash_)}, "
                             f"the path says {claimed_hex}")
    return Xorb(hash_, chunks, offsets, off)


def check_xorb_footer(buf, start, hash_, chunks, offsets):
    """The XorbObjectInfo footer after the chunks must describe exactly those chunks."""
    foot = buf[start:]
    n = len(chunks)
    want = 92 + 40 * n
    if len(foot) < 4 or struct.unpack_from("<I", foot, len(foot) - 4)[0] != len(foot) - 4:
        raise XetFormatError(f"{len(foot)} bytes after the last chunk are neither a chunk nor "
                             "a footer whose final u32 gives its length")
    if len(foot) - 4 != want:
        raise XetFormatError(f"xorb footer is {len(foot) - 4} bytes, {n} chunks need {want}")
    if foot[:7] != b"XETBLOB" or foot[7] != 1:
        raise XetFormatError("xorb footer does not start with XETBLOB version 1")
    if foot[8:40] != hash_:
        raise XetFormatError(f"xorb footer hash {xh.to_hex(foot[8:40])} is not the chunks' "
                             f"hash {xh.to_hex(hash_)}")
    p = 40
    if foot[p:p + 7] != b"XBLBHSH" or foot[p + 7] != 0:
        raise XetFormatError("xorb footer hash section ident is not XBLBHSH version 0")
    if struct.unpack_from("<I", foot, p + 8)[0] != n:
        raise XetFormatError("xorb footer hash section chunk count differs")
    p += 12
    for i, (h, _) in enumerate(chunks):
        if foot[p:p + 32] != h:
            raise XetFormatError(f"xorb footer chunk hash {i} differs from the chunk's hash")
        p += 32
    if foot[p:p + 7] != b"XBLBBND" or foot[p + 7] != 1:
        raise XetFormatError("xorb footer boundary section ident is not XBLBBND version 1")
    if struct.unpack_from("<I", foot, p + 8)[0] != n:
        raise XetFormatError("xorb footer boundary section chunk count differs")
    p += 12
    ends = list(struct.unpack_from(f"<{n}I", foot, p))
    p += 4 * n
    unpacked = list(struct.unpack_from(f"<{n}I", foot, p))
    p += 4 * n
    if ends != offsets[1:]:
        raise XetFormatError("xorb footer chunk boundary offsets differ from the chunks")
    acc, want_unpacked = 0, []
    for _, ln in chunks:
        acc += ln
        want_unpacked.append(acc)
    if unpacked != want_unpacked:
        raise XetFormatError("xorb footer unpacked chunk offsets differ from the chunks")
    if struct.unpack_from("<I", foot, p)[0] != n:
        raise XetFormatError("xorb footer trailing chunk count differs")


# ---------------------------------------------------------------------------------------------
# shards


class FileInfo:
    def __init__(self, hash_, terms, verifications, sha256):
        self.hash = hash_
        self.terms = terms  # [(xorb hash raw, unpacked bytes, chunk start, chunk end)]
        self.verifications = verifications  # [range hash raw] or None
        self.sha256 = sha256  # raw 32 bytes or None


class CasInfo:
    def __init__(self, hash_, chunks, unpacked, on_disk):
        self.hash = hash_
        self.chunks = chunks  # [(chunk hash raw, byte start, unpacked length)]
        self.unpacked = unpacked
        self.on_disk = on_disk


def parse_shard(buf):
    """(files, xorbs, footer or None) of a serialized shard; XetFormatError when malformed."""
    if len(buf) < 48 or buf[:32] != SHARD_TAG:
        raise XetFormatError("shard does not start with the MDB shard header tag")
    ver, footer_size = struct.unpack_from("<QQ", buf, 32)
    if ver != SHARD_HEADER_VERSION:
        raise XetFormatError(f"shard header version {ver}, expected 2")
    if footer_size not in (0, SHARD_FOOTER_SIZE):
        raise XetFormatError(f"shard footer size {footer_size}, expected 0 or 200")
    end = len(buf) - footer_size
    if end < 48:
        raise XetFormatError("shard shorter than its header and footer")
    p = 48

    def need(n, what):
        if p + n > end:
            raise XetFormatError(f"shard truncated in {what} at byte {p}")

    files = []
    while True:
        need(ENTRY, "the file info section")
        if buf[p:p + ENTRY] == BOOKEND:
            p += ENTRY
            break
        fhash = bytes(buf[p:p + 32])
        flags, nent = struct.unpack_from("<II", buf, p + 32)
        p += ENTRY
        need(ENTRY * nent, f"file {xh.to_hex(fhash)} terms")
        terms = []
        for _ in range(nent):
            xhash = bytes(buf[p:p + 32])
            _cflags, ubytes, cs, ce = struct.unpack_from("<IIII", buf, p + 32)
            terms.append((xhash, ubytes, cs, ce))
            p += ENTRY
        ver_hashes = None
        if flags & FLAG_VERIFICATION:
            need(ENTRY * nent, f"file {xh.to_hex(fhash)} verification entries")
            ver_hashes = []
            for _ in range(nent):
                ver_hashes.append(bytes(buf[p:p + 32]))
                p += ENTRY
        sha = None
        if flags & FLAG_METADATA_EXT:
            need(ENTRY, f"file {xh.to_hex(fhash)} metadata extension")
            sha = bytes(buf[p:p + 32])
            p += ENTRY
        files.append(FileInfo(fhash, terms, ver_hashes, sha))
    xorbs = []
    while True:
        need(ENTRY, "the CAS info section")
        if buf[p:p + ENTRY] == BOOKEND:
            p += ENTRY
            break
        xhash = bytes(buf[p:p + 32])
        _flags, nent, unpacked, on_disk = struct.unpack_from("<IIII", buf, p + 32)
        p += ENTRY
        need(ENTRY * nent, f"xorb {xh.to_hex(xhash)} chunk entries")
        chunks = []
        for _ in range(nent):
            chash = bytes(buf[p:p + 32])
            start, ulen = struct.unpack_from("<II", buf, p + 32)
            chunks.append((chash, start, ulen))
            p += ENTRY
        xorbs.append(CasInfo(xhash, chunks, unpacked, on_disk))
    if p != end:
        raise XetFormatError(f"{end - p} unexpected bytes after the CAS info bookend")
    footer = None
    if footer_size:
        fver, fi_off, cas_off = struct.unpack_from("<QQQ", buf, end)
        if fver != SHARD_FOOTER_VERSION:
            raise XetFormatError(f"shard footer version {fver}, expected 1")
        foot_off = struct.unpack_from("<Q", buf, end + 192)[0]
        if fi_off != 48 or foot_off != end or not 48 <= cas_off < end:
            raise XetFormatError("shard footer offsets do not match the sections")
        footer = {"file_info_offset": fi_off, "cas_info_offset": cas_off}
    return files, xorbs, footer


def build_dedup_shard(xorbs, hmac_key, expiry):
    """A global-dedup answer: no files; the given xorbs with HMAC-protected chunk hashes.

    xorbs: [(xorb hash raw, [(chunk hash raw, unpacked length)], bytes on disk)]. The footer
    keeps xet-core's lookup-table offsets (empty tables) so readers of either footer layout
    find the end of the CAS info section."""
    out = bytearray(SHARD_TAG + struct.pack("<QQ", SHARD_HEADER_VERSION, SHARD_FOOTER_SIZE))
    out += BOOKEND
    cas_off = len(out)
    for xhash, chunks, on_disk in xorbs:
        out += xhash + struct.pack("<IIII", 0, len(chunks), sum(n for _, n in chunks), on_disk)
        start = 0
        for chash, n in chunks:
            out += xh.hmac(chash, hmac_key) + struct.pack("<IIQ", start, n, 0)
            start += n
    out += BOOKEND
    foot = len(out)
    stored = sum(d for _, _, d in xorbs)
    unpacked = sum(sum(n for _, n in c) for _, c, _ in xorbs)
    out += struct.pack("<QQQ", SHARD_FOOTER_VERSION, 48, cas_off)
    out += struct.pack("<QQQQQQ", foot, 0, foot, 0, foot, 0)  # file, cas, chunk lookups
    out += hmac_key
    out += struct.pack("<QQ", int(time.time()), int(expiry))
    out += bytes(48)
    out += struct.pack("<QQQQ", stored, 0, unpacked, foot)
    assert len(out) - foot == SHARD_FOOTER_SIZE
    return bytes(out)
