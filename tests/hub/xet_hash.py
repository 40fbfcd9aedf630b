"""Xet hashes for the test hub: BLAKE3 through ctypes, and the chunk, xorb, file, verification
and HMAC hashes of the Xet protocol (https://huggingface.co/docs/xet/hashing), with the string
form of a hash used in URLs and JSON (https://huggingface.co/docs/xet/api).

Python has no BLAKE3, so the official C implementation the build produces as
libckptblake3.so is loaded: env CKPT_BLAKE3_LIB, else $CKPT_BUILD_DIR/lib/, else build/lib/ and
build-asan/lib/ of this repository. load() says why when it cannot.
"""

import ctypes
import os
import struct

HASHER_BYTES = 2048  # sizeof(blake3_hasher) is 1912; room to spare
HASH_LEN = 32

DATA_KEY = bytes([102, 151, 245, 119, 91, 149, 80, 222, 49, 53, 203, 172, 165, 151, 24, 28,
                  157, 228, 33, 16, 155, 235, 43, 88, 180, 208, 176, 75, 147, 173, 242, 41])
INTERNAL_NODE_KEY = bytes([1, 126, 197, 199, 165, 71, 41, 150, 253, 148, 102, 102, 180, 138, 2,
                           230, 93, 221, 83, 111, 55, 199, 109, 210, 248, 99, 82, 230, 74, 83,
                           113, 63])
VERIFICATION_KEY = bytes([127, 24, 87, 214, 206, 86, 237, 102, 18, 127, 249, 19, 231, 165, 195,
                          243, 164, 205, 38, 213, 181, 219, 73, 230, 65, 36, 152, 127, 40, 251,
                          148, 195])
ZERO_HASH = bytes(HASH_LEN)
MEAN_BRANCHING = 4

_lib = None


def candidate_paths():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    env = os.environ.get("CKPT_BLAKE3_LIB")
    if env:
        return [env]
    out = []
    bdir = os.environ.get("CKPT_BUILD_DIR")
    if bdir:
        out.append(os.path.join(bdir, "lib", "libckptblake3.so"))
    out += [os.path.join(repo, d, "lib", "libckptblake3.so") for d in ("build", "build-asan")]
    return out


def load():
    """Load the library once. Returns None on success, else the reason it is unavailable."""
    global _lib
    if _lib is not None:
        return None
    tried = []
    for p in candidate_paths():
        if not os.path.exists(p):
            tried.append(f"{p} (missing)")
            continue
        try:
            lib = ctypes.CDLL(p)
            lib.blake3_hasher_init_keyed.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.blake3_hasher_update.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                                 ctypes.c_size_t]
            lib.blake3_hasher_finalize.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                                   ctypes.c_size_t]
        except (OSError, AttributeError) as e:
            tried.append(f"{p} ({e})")
            continue
        _lib = lib
        return None
    return "libckptblake3.so not loadable: " + "; ".join(tried)


def keyed_hash(key, data):
    """BLAKE3 keyed hash (32-byte key) of bytes-like data, 32 bytes."""
    if _lib is None:
        raise RuntimeError(load() or "BLAKE3 unavailable")
    state = ctypes.create_string_buffer(HASHER_BYTES)
    _lib.blake3_hasher_init_keyed(state, bytes(key))
    if len(data):
        buf = (ctypes.c_char * len(data)).from_buffer_copy(data) if not isinstance(
            data, bytes) else data
        _lib.blake3_hasher_update(state, buf, len(data))
    out = ctypes.create_string_buffer(HASH_LEN)
    _lib.blake3_hasher_finalize(state, out, HASH_LEN)
    return out.raw


# string form: each 8-byte group read as a little-endian u64, printed as 16 hex digits


def to_hex(h):
    return "".join("%016x" % v for v in struct.unpack("<4Q", h))


def from_hex(s):
    """The 32 raw bytes of a 64-hex hash string; ValueError if malformed."""
    if len(s) != 64 or s.lower() != s:
        raise ValueError(f"hash must be 64 lowercase hex characters, got '{s[:80]}'")
    return struct.pack("<4Q", *(int(s[i:i + 16], 16) for i in range(0, 64, 16)))


def chunk_hash(data):
    return keyed_hash(DATA_KEY, data)


def _node(seq):
    text = "".join(f"{to_hex(h)} : {n}\n" for h, n in seq)
    return keyed_hash(INTERNAL_NODE_KEY, text.encode()), sum(n for _, n in seq)


def _next_cut(seq, start):
    left = len(seq) - start
    if left <= 2:
        return left
    end = min(2 * MEAN_BRANCHING + 1, left)
    for i in range(2, end):
        if struct.unpack_from("<Q", seq[start + i][0], 24)[0] % MEAN_BRANCHING == 0:
            return i + 1
    return end


def merkle_root(chunks):
    """Root of Xet's aggregated hash tree over [(hash, length)] (zero hash when empty)."""
    if not chunks:
        return ZERO_HASH
    level = list(chunks)
    while len(level) > 1:
        nxt = []
        i = 0
        while i < len(level):
            n = _next_cut(level, i)
            nxt.append(_node(level[i:i + n]))
            i += n
        level = nxt
    return level[0][0]


def xorb_hash(chunks):
    return merkle_root(chunks)


def hmac(h, key):
    return keyed_hash(key, h)


def file_hash(chunks, salt=ZERO_HASH):
    if not chunks:
        return ZERO_HASH
    return hmac(merkle_root(chunks), salt)


def verification_hash(hashes):
    return keyed_hash(VERIFICATION_KEY, b"".join(hashes))
