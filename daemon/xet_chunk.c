/* xet_chunk.c - the Xet gear-hash chunker: boundary search over a byte stream.
 *
 * A boundary falls after a byte where the rolling gear hash has its top 16 bits all zero, once
 * the chunk holds at least XET_CHUNK_MIN bytes, or at XET_CHUNK_MAX bytes. The first bytes of a
 * chunk cannot end it, and the gear hash only remembers the last 64 bytes it saw, so hashing
 * starts 64 + 1 bytes before the minimum: the reference chunker does the same, and boundaries
 * then depend on the chunk's own bytes only (and match it exactly).
 */
#include "xet_chunk.h"

/* The gear table of the reference implementation (the gearhash crate's DEFAULT_TABLE), which
 * the Xet spec adopts. */
static const uint64_t gear_table[256] = {
    UINT64_C(0xb088d3a9e840f559), UINT64_C(0x5652c7f739ed20d6), UINT64_C(0x45b28969898972ab),
    UINT64_C(0x6b0a89d5b68ec777), UINT64_C(0x368f573e8b7a31b7), UINT64_C(0x1dc636dce936d94b),
    UINT64_C(0x207a4c4e5554d5b6), UINT64_C(0xa474b34628239acb), UINT64_C(0x3b06a83e1ca3b912),
    UINT64_C(0x90e78d6c2f02baf7), UINT64_C(0xe1c92df7150d9a8a), UINT64_C(0x8e95053a1086d3ad),
    UINT64_C(0x5a2ef4f1b83a0722), UINT64_C(0xa50fac949f807fae), UINT64_C(0x0e7303eb80d8d681),
    UINT64_C(0x99b07edc1570ad0f), UINT64_C(0x689d2fb555fd3076), UINT64_C(0x00005082119ea468),
    UINT64_C(0xc4b08306a88fcc28), UINT64_C(0x3eb0678af6374afd), UINT64_C(0xf19f87ab86ad7436),
    UINT64_C(0xf2129fbfbe6bc736), UINT64_C(0x481149575c98a4ed), UINT64_C(0x0000010695477bc5),
    UINT64_C(0x1fba37801a9ceacc), UINT64_C(0x3bf06fd663a49b6d), UINT64_C(0x99687e9782e3874b),
    UINT64_C(0x79a10673aa50d8e3), UINT64_C(0xe4accf9e6211f420), UINT64_C(0x2520e71f87579071),
    UINT64_C(0x2bd5d3fd781a8a9b), UINT64_C(0x00de4dcddd11c873), UINT64_C(0xeaa9311c5a87392f),
    UINT64_C(0xdb748eb617bc40ff), UINT64_C(0xaf579a8df620bf6f), UINT64_C(0x86a6e5da1b09c2b1),
    UINT64_C(0xcc2fc30ac322a12e), UINT64_C(0x355e2afec1f74267), UINT64_C(0x2d99c8f4c021a47b),
    UINT64_C(0xbade4b4a9404cfc3), UINT64_C(0xf7b518721d707d69), UINT64_C(0x3286b6587bf32c20),
    UINT64_C(0x0000b68886af270c), UINT64_C(0xa115d6e4db8a9079), UINT64_C(0x484f7e9c97b2e199),
    UINT64_C(0xccca7bb75713e301), UINT64_C(0xbf2584a62bb0f160), UINT64_C(0xade7e813625dbcc8),
    UINT64_C(0x000070940d87955a), UINT64_C(0x8ae69108139e626f), UINT64_C(0xbd776ad72fde38a2),
    UINT64_C(0xfb6b001fc2fcc0cf), UINT64_C(0xc7a474b8e67bc427), UINT64_C(0xbaf6f11610eb5d58),
    UINT64_C(0x09cb1f5b6de770d1), UINT64_C(0xb0b219e6977d4c47), UINT64_C(0x00ccbc386ea7ad4a),
    UINT64_C(0xcc849d0adf973f01), UINT64_C(0x73a3ef7d016af770), UINT64_C(0xc807d2d386bdbdfe),
    UINT64_C(0x7f2ac9966c791730), UINT64_C(0xd037a86bc6c504da), UINT64_C(0xf3f17c661eaa609d),
    UINT64_C(0xaca626b04daae687), UINT64_C(0x755a99374f4a5b07), UINT64_C(0x90837ee65b2caede),
    UINT64_C(0x6ee8ad93fd560785), UINT64_C(0x0000d9e11053edd8), UINT64_C(0x9e063bb2d21cdbd7),
    UINT64_C(0x07ab77f12a01d2b2), UINT64_C(0xec550255e6641b44), UINT64_C(0x78fb94a8449c14c6),
    UINT64_C(0xc7510e1bc6c0f5f5), UINT64_C(0x0000320b36e4cae3), UINT64_C(0x827c33262c8b1a2d),
    UINT64_C(0x14675f0b48ea4144), UINT64_C(0x267bd3a6498deceb), UINT64_C(0xf1916ff982f5035e),
    UINT64_C(0x86221b7ff434fb88), UINT64_C(0x9dbecee7386f49d8), UINT64_C(0xea58f8cac80f8f4a),
    UINT64_C(0x008d198692fc64d8), UINT64_C(0x6d38704fbabf9a36), UINT64_C(0xe032cb07d1e7be4c),
    UINT64_C(0x228d21f6ad450890), UINT64_C(0x635cb1bfc02589a5), UINT64_C(0x4620a1739ca2ce71),
    UINT64_C(0xa7e7dfe3aae5fb58), UINT64_C(0x0c10ca932b3c0deb), UINT64_C(0x2727fee884afed7b),
    UINT64_C(0xa2df1c6df9e2ab1f), UINT64_C(0x4dcdd1ac0774f523), UINT64_C(0x000070ffad33e24e),
    UINT64_C(0xa2ace87bc5977816), UINT64_C(0x9892275ab4286049), UINT64_C(0xc2861181ddf18959),
    UINT64_C(0xbb9972a042483e19), UINT64_C(0xef70cd3766513078), UINT64_C(0x00000513abfc9864),
    UINT64_C(0xc058b61858c94083), UINT64_C(0x09e850859725e0de), UINT64_C(0x9197fb3bf83e7d94),
    UINT64_C(0x7e1e626d12b64bce), UINT64_C(0x520c54507f7b57d1), UINT64_C(0xbee1797174e22416),
    UINT64_C(0x6fd9ac3222e95587), UINT64_C(0x0023957c9adfbf3e), UINT64_C(0xa01c7d7e234bbe15),
    UINT64_C(0xaba2c758b8a38cbb), UINT64_C(0x0d1fa0ceec3e2b30), UINT64_C(0x0bb6a58b7e60b991),
    UINT64_C(0x4333dd5b9fa26635), UINT64_C(0xc2fd3b7d4001c1a3), UINT64_C(0xfb41802454731127),
    UINT64_C(0x65a56185a50d18cb), UINT64_C(0xf67a02bd8784b54f), UINT64_C(0x696f11dd67e65063),
    UINT64_C(0x00002022fca814ab), UINT64_C(0x8cd6be912db9d852), UINT64_C(0x695189b6e9ae8a57),
    UINT64_C(0xee9453b50ada0c28), UINT64_C(0xd8fc5ea91a78845e), UINT64_C(0xab86bf191a4aa767),
    UINT64_C(0x0000c6b5c86415e5), UINT64_C(0x267310178e08a22e), UINT64_C(0xed2d101b078bca25),
    UINT64_C(0x3b41ed84b226a8fb), UINT64_C(0x13e622120f28dc06), UINT64_C(0xa315f5ebfb706d26),
    UINT64_C(0x8816c34e3301bace), UINT64_C(0xe9395b9cbb71fdae), UINT64_C(0x002ce9202e721648),
    UINT64_C(0x4283db1d2bb3c91c), UINT64_C(0xd77d461ad2b1a6a5), UINT64_C(0xe2ec17e46eeb866b),
    UINT64_C(0xb8e0be4039fbc47c), UINT64_C(0xdea160c4d5299d04), UINT64_C(0x7eec86c8d28c3634),
    UINT64_C(0x2119ad129f98a399), UINT64_C(0xa6ccf46b61a283ef), UINT64_C(0x2c52cedef658c617),
    UINT64_C(0x2db4871169acdd83), UINT64_C(0x0000f0d6f39ecbe9), UINT64_C(0x3dd5d8c98d2f9489),
    UINT64_C(0x8a1872a22b01f584), UINT64_C(0xf282a4c40e7b3cf2), UINT64_C(0x8020ec2ccb1ba196),
    UINT64_C(0x6693b6e09e59e313), UINT64_C(0x0000ce19cc7c83eb), UINT64_C(0x20cb5735f6479c3b),
    UINT64_C(0x762ebf3759d75a5b), UINT64_C(0x207bfe823d693975), UINT64_C(0xd77dc112339cd9d5),
    UINT64_C(0x9ba7834284627d03), UINT64_C(0x217dc513e95f51e9), UINT64_C(0xb27b1a29fc5e7816),
    UINT64_C(0x00d5cd9831bb662d), UINT64_C(0x71e39b806d75734c), UINT64_C(0x7e572af006fb1a23),
    UINT64_C(0xa2734f2f6ae91f85), UINT64_C(0xbf82c6b5022cddf2), UINT64_C(0x5c3beac60761a0de),
    UINT64_C(0xcdc893bb47416998), UINT64_C(0x6d1085615c187e01), UINT64_C(0x77f8ae30ac277c5d),
    UINT64_C(0x917c6b81122a2c91), UINT64_C(0x5b75b699add16967), UINT64_C(0x0000cf6ae79a069b),
    UINT64_C(0xf3c40afa60de1104), UINT64_C(0x2063127aa59167c3), UINT64_C(0x621de62269d1894d),
    UINT64_C(0xd188ac1de62b4726), UINT64_C(0x107036e2154b673c), UINT64_C(0x0000b85f28553a1d),
    UINT64_C(0xf2ef4e4c18236f3d), UINT64_C(0xd9d6de6611b9f602), UINT64_C(0xa1fc7955fb47911c),
    UINT64_C(0xeb85fd032f298dbd), UINT64_C(0xbe27502fb3befae1), UINT64_C(0xe3034251c4cd661e),
    UINT64_C(0x441364d354071836), UINT64_C(0x0082b36c75f2983e), UINT64_C(0xb145910316fa66f0),
    UINT64_C(0x021c069c9847caf7), UINT64_C(0x2910dfc75a4b5221), UINT64_C(0x735b353e1c57a8b5),
    UINT64_C(0xce44312ce98ed96c), UINT64_C(0xbc942e4506bdfa65), UINT64_C(0xf05086a71257941b),
    UINT64_C(0xfec3b215d351cead), UINT64_C(0x00ae1055e0144202), UINT64_C(0xf54b40846f42e454),
    UINT64_C(0x00007fd9c8bcbcc8), UINT64_C(0xbfbd9ef317de9bfe), UINT64_C(0xa804302ff2854e12),
    UINT64_C(0x39ce4957a5e5d8d4), UINT64_C(0xffb9e2a45637ba84), UINT64_C(0x55b9ad1d9ea0818b),
    UINT64_C(0x00008acbf319178a), UINT64_C(0x48e2bfc8d0fbfb38), UINT64_C(0x8be39841e848b5e8),
    UINT64_C(0x0e2712160696a08b), UINT64_C(0xd51096e84b44242a), UINT64_C(0x1101ba176792e13a),
    UINT64_C(0xc22e770f4531689d), UINT64_C(0x1689eff272bbc56c), UINT64_C(0x00a92a197f5650ec),
    UINT64_C(0xbc765990bda1784e), UINT64_C(0xc61441e392fcb8ae), UINT64_C(0x07e13a2ced31e4a0),
    UINT64_C(0x92cbe984234e9d4d), UINT64_C(0x8f4ff572bb7d8ac5), UINT64_C(0x0b9670c00b963bd0),
    UINT64_C(0x62955a581a03eb01), UINT64_C(0x645f83e5ea000254), UINT64_C(0x41fce516cd88f299),
    UINT64_C(0xbbda9748da7a98cf), UINT64_C(0x0000aab2fe4845fa), UINT64_C(0x19761b069bf56555),
    UINT64_C(0x8b8f5e8343b6ad56), UINT64_C(0x3e5d1cfd144821d9), UINT64_C(0xec5c1e2ca2b0cd8f),
    UINT64_C(0xfaf7e0fea7fbb57f), UINT64_C(0x000000d3ba12961b), UINT64_C(0xda3f90178401b18e),
    UINT64_C(0x70ff906de33a5feb), UINT64_C(0x0527d5a7c06970e7), UINT64_C(0x22d8e773607c13e9),
    UINT64_C(0xc9ab70df643c3bac), UINT64_C(0xeda4c6dc8abe12e3), UINT64_C(0xecef1f410033e78a),
    UINT64_C(0x0024c2b274ac72cb), UINT64_C(0x06740d954fa900b4), UINT64_C(0x1d7a299b323d6304),
    UINT64_C(0xb3c37cb298cbead5), UINT64_C(0xc986e3c76178739b), UINT64_C(0x9fabea364b46f58a),
    UINT64_C(0x6da214c5af85cc56), UINT64_C(0x17a43ed8b7a38f84), UINT64_C(0x6eccec511d9adbeb),
    UINT64_C(0xf9cab30913335afb), UINT64_C(0x4a5e60c5f415eed2), UINT64_C(0x00006967503672b4),
    UINT64_C(0x9da51d121454bb87), UINT64_C(0x84321e13b9bbc816), UINT64_C(0xfb3d6fb6ab2fdd8d),
    UINT64_C(0x60305eed8e160a8d), UINT64_C(0xcbbf4b14e9946ce8), UINT64_C(0x00004f63381b10c3),
    UINT64_C(0x07d5b7816fcc4e10), UINT64_C(0xe5a536726a6a8155), UINT64_C(0x57afb23447a07fdd),
    UINT64_C(0x18f346f7abc9d394), UINT64_C(0x636dc655d61ad33d), UINT64_C(0xcc8bab4939f7f3f6),
    UINT64_C(0x63c7a906c1dd187b),
};

/* The target size's mask (16 one bits for 64 KiB) shifted to the top: the low bits of a gear
 * hash depend on only a few bytes. */
#define GEAR_MASK (((uint64_t)XET_CHUNK_TARGET - 1) << 48)
/* Bytes at the start of every chunk that are never hashed. */
#define HASH_START ((uint64_t)XET_CHUNK_MIN - 64 - 1)

_Static_assert(XET_CHUNK_TARGET == 65536, "GEAR_MASK assumes a 64 KiB target");

void xet_chunker_init(struct xet_chunker *c)
{
    c->gear = 0;
    c->chunk_len = 0;
}

size_t xet_chunker_scan(struct xet_chunker *c, const uint8_t *data, size_t len, bool *boundary,
                        uint64_t *chunk_len)
{
    uint64_t have = c->chunk_len;
    size_t i = 0;

    *boundary = false;
    if (have < HASH_START) {
        uint64_t skip = HASH_START - have;
        if (skip >= len) {
            c->chunk_len = have + len;
            return len;
        }
        i = (size_t)skip;
        have = HASH_START;
    }

    uint64_t h = c->gear;
    /* Hashed but never a boundary: the chunk would be shorter than the minimum. */
    while (i < len && have < XET_CHUNK_MIN - 1) {
        h = (h << 1) + gear_table[data[i++]];
        have++;
    }
    if (have >= XET_CHUNK_MIN - 1) {
        size_t room = (size_t)(XET_CHUNK_MAX - have);
        size_t n = len - i < room ? len - i : room;
        const uint8_t *p = data + i;
        const uint8_t *end = p + n;
        while (p < end) {
            h = (h << 1) + gear_table[*p++];
            if ((h & GEAR_MASK) == 0) {
                break;
            }
        }
        size_t used = (size_t)(p - (data + i));
        have += used;
        i += used;
        if ((h & GEAR_MASK) == 0 && used > 0) {
            goto cut;
        }
        if (have == XET_CHUNK_MAX) {
            goto cut;
        }
    }
    c->gear = h;
    c->chunk_len = have;
    return i;

cut:
    *boundary = true;
    *chunk_len = have;
    c->gear = 0;
    c->chunk_len = 0;
    return i;
}

uint64_t xet_chunker_finish(struct xet_chunker *c)
{
    uint64_t last = c->chunk_len;
    xet_chunker_init(c);
    return last;
}

size_t xet_chunk_buffer(const uint8_t *data, size_t len, uint64_t *lens, size_t max)
{
    struct xet_chunker c;
    size_t n = 0;
    size_t pos = 0;

    xet_chunker_init(&c);
    while (pos < len) {
        bool boundary;
        uint64_t chunk_len;
        pos += xet_chunker_scan(&c, data + pos, len - pos, &boundary, &chunk_len);
        if (boundary) {
            if (n < max) {
                lens[n] = chunk_len;
            }
            n++;
        }
    }
    uint64_t last = xet_chunker_finish(&c);
    if (last > 0) {
        if (n < max) {
            lens[n] = last;
        }
        n++;
    }
    return n;
}
