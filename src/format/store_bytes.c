// Distribution stores: the CRC-32 that guards every section, and the growable byte buffer that
// sections and records are encoded into (fk_store_buf, public so that callers can encode
// records on several threads). Little-endian integers are in store_internal.h.
#include "format/store_internal.h"

#include <stdlib.h>

// ------------------------------------------------------------------ CRC-32 (zlib polynomial)
// Four bits at a time from a 16-entry table: small, and fast enough next to range coding.

static const uint32_t crc_nibble[16] = {
    0x00000000, 0x1DB71064, 0x3B6E20C8, 0x26D930AC, 0x76DC4190, 0x6B6B51F4, 0x4DB26158, 0x5005713C,
    0xEDB88320, 0xF00F9344, 0xD6D6A3E8, 0xCB61B38C, 0x9B64C2B0, 0x86D3D2D4, 0xA00AE278, 0xBDBDF21C,
};

uint32_t store_crc32(const void *data, size_t n) {
    const uint8_t *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        c = (c >> 4) ^ crc_nibble[c & 15];
        c = (c >> 4) ^ crc_nibble[c & 15];
    }
    return c ^ 0xFFFFFFFFu;
}

// ------------------------------------------------------------------ growable byte buffer

bool store_buf_reserve(fk_store_buf *b, size_t more) {
    if (b->n + more <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + more) cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) return false;
    b->data = d;
    b->cap = cap;
    return true;
}

void fk_store_buf_free(fk_store_buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}
