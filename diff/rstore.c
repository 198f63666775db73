/* rstore: see rstore.h. */
#include "rstore.h"

#include <stdlib.h>
#include <string.h>

#include "array.h"
#include "internal.h"

void rstore_release(rstore_t *rs)
{
    for (size_t i = 0; i < rs->nblocks; i++)
        free(rs->blocks[i].z);
    free(rs->blocks);
    free(rs->open);
    free(rs->scratch);
    free(rs->cache);
    ZSTD_freeCCtx(rs->cctx);
    ZSTD_freeDCtx(rs->dctx);
    memset(rs, 0, sizeof(*rs));
    rs->cache_block = SIZE_MAX;
}

/* Compresses the open block into a block of its own. 0 or -1 (ENOMEM). */
static int rstore_close_block(rstore_t *rs)
{
    if (rs->open_len == 0)
        return 0;
    rblock_t *blocks =
        array_grow(rs->blocks, &rs->blocks_cap, rs->nblocks + 1, sizeof(*blocks), 16);
    if (blocks == NULL)
        return -1;
    rs->blocks = blocks;
    size_t bound = ZSTD_compressBound(rs->open_len);
    if (bound > rs->scratch_cap) {
        unsigned char *v = realloc(rs->scratch, bound);
        if (v == NULL)
            return -1;
        rs->scratch = v;
        rs->scratch_cap = bound;
    }
    if (rs->cctx == NULL && (rs->cctx = ZSTD_createCCtx()) == NULL)
        return -1;
    size_t zlen = ZSTD_compressCCtx(rs->cctx, rs->scratch, rs->scratch_cap, rs->open, rs->open_len,
                                    RSTORE_LEVEL);
    if (ZSTD_isError(zlen))
        return -1;
    unsigned char *z = malloc(zlen);
    if (z == NULL)
        return -1;
    memcpy(z, rs->scratch, zlen);
    rs->blocks[rs->nblocks++] =
        (rblock_t){.z = z, .zlen = (uint32_t)zlen, .rawlen = (uint32_t)rs->open_len};
    rs->held = rs->held - rs->open_len + heap_cost(zlen);
    rs->open_len = 0;
    return 0;
}

int rstore_append(rstore_t *rs, const char *text, size_t len, size_t max, uint32_t *block,
                  uint32_t *off)
{
    if (len > UINT32_MAX / 2)
        return -2;
    if (rs->open_len > 0 && (rs->open_len + len > rs->open_cap || rs->held + len > max)) {
        if (rstore_close_block(rs) != 0)
            return -1;
    }
    if (rs->held + len > max)
        return -2;
    if (len > rs->open_cap) {
        /* a record larger than a block is a block of its own */
        size_t cap = len > RSTORE_BLOCK ? len : RSTORE_BLOCK;
        char *v = realloc(rs->open, cap);
        if (v == NULL)
            return -1;
        rs->open = v;
        rs->open_cap = cap;
    }
    if (rs->nblocks > UINT32_MAX - 1)
        return -1;
    *block = (uint32_t)rs->nblocks;
    *off = (uint32_t)rs->open_len;
    memcpy(rs->open + rs->open_len, text, len);
    rs->open_len += len;
    rs->held += len;
    rs->raw += len;
    return 0;
}
const char *rstore_get(rstore_t *rs, uint32_t block, uint32_t off)
{
    if (block == rs->nblocks)
        return rs->open + off;
    if (block > rs->nblocks)
        return NULL;
    const rblock_t *b = &rs->blocks[block];
    if (rs->cache_block != block) {
        if (b->rawlen > rs->cache_cap) {
            char *v = realloc(rs->cache, b->rawlen);
            if (v == NULL)
                return NULL;
            rs->cache = v;
            rs->cache_cap = b->rawlen;
        }
        if (rs->dctx == NULL && (rs->dctx = ZSTD_createDCtx()) == NULL)
            return NULL;
        rs->cache_block = SIZE_MAX;
        size_t n = ZSTD_decompressDCtx(rs->dctx, rs->cache, rs->cache_cap, b->z, b->zlen);
        if (ZSTD_isError(n) || n != b->rawlen)
            return NULL;
        rs->cache_block = block;
    }
    return rs->cache + off;
}
