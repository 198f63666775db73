/*
 * rstore: the records a cycle's events will carry, kept compressed until
 * they are read (see below). Owned by one cycle; no I/O.
 */
#ifndef SB_DIFF_RSTORE_H
#define SB_DIFF_RSTORE_H

#include <stddef.h>
#include <stdint.h>

#include <zstd.h>

/*
 * The records an event will carry wait as text appended to blocks of
 * RSTORE_BLOCK bytes; a full block is compressed with zstd and the raw
 * buffer reused. Century-shaped records compress ~8x at level 1 in blocks
 * this large (smaller blocks lose the repetition between records), and
 * level 1 compresses at several hundred MB/s, a small fraction of a
 * record's parse. Reading a record decompresses its whole block into one
 * cache: events are read in publication order, which is the order the
 * records were appended in except for the rare duplicate, so each block is
 * decoded about once per pass.
 */
#define RSTORE_BLOCK (256 * 1024)
#define RSTORE_LEVEL 1
/* Block number of a note that retains no record. */
#define RSTORE_NONE UINT32_MAX

typedef struct rblock {
    unsigned char *z; /* compressed bytes */
    uint32_t zlen;
    uint32_t rawlen;
} rblock_t;

typedef struct rstore {
    rblock_t *blocks;
    size_t nblocks, blocks_cap;
    char *open; /* the block being filled: number nblocks */
    size_t open_len, open_cap;
    unsigned char *scratch; /* compression output, ZSTD_compressBound(open_cap) */
    size_t scratch_cap;
    char *cache; /* the block decoded last */
    size_t cache_cap;
    size_t cache_block; /* SIZE_MAX: none */
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    size_t held; /* heap_cost() of the compressed blocks, plus the open block's bytes */
    size_t raw;  /* bytes appended, for the figures */
} rstore_t;

/* Frees everything rs holds and empties it (ready for reuse). */
void rstore_release(rstore_t *rs);
/*
 * Appends len bytes of text when what the store holds stays within max
 * (the open block is compressed first when that makes room). 0, -1 on
 * ENOMEM, -2 when over max.
 */
int rstore_append(rstore_t *rs, const char *text, size_t len, size_t max, uint32_t *block,
                  uint32_t *off);

/* The text appended at (block, off): valid until the next call. NULL on
 * ENOMEM or a block that does not decode. */
const char *rstore_get(rstore_t *rs, uint32_t block, uint32_t off);

#endif /* SB_DIFF_RSTORE_H */
