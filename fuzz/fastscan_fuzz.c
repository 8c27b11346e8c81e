/* libFuzzer harness of the Postfix block scan's C core (bounce_exporter/parsers/fastscan_core.c).
 *
 * Built and run by `python -m bench.fuzz` (clang -fsanitize=fuzzer,address,undefined). The input
 * is copied into a buffer of exactly its size plus the newline a block ends with, so that
 * AddressSanitizer sees any read past the block. Besides "no crash, no leak, no out-of-bounds
 * read", every record is checked: in order, inside the block, its spans inside its line, and
 * printable ASCII wherever the wrapper makes a string of them.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fastscan.h"

static void check_span(const unsigned char *b, const bx_record *r, const bx_span *s, int ascii) {
    if (s->len < 0)
        return;
    if (s->off < r->start || s->off + (size_t)s->len > r->end)
        abort();
    for (ssize_t i = 0; ascii && i < s->len; i++)
        if (b[s->off + (size_t)i] < 0x20 || b[s->off + (size_t)i] > 0x7e)
            abort();
}

static void check(const unsigned char *b, size_t len, const bx_record *r, size_t *last) {
    if (r->start > r->end || r->end >= len || r->start < *last)
        abort();
    *last = r->end;
    for (size_t i = r->start; i < r->end; i++)
        if (b[i] == '\n')
            abort(); /* one line, never two */
    if (r->kind == BX_REMOVED) {
        check_span(b, r, &r->qid, 1);
    } else if (r->kind == BX_DELIVERY) {
        const bx_span *spans[] = {&r->mon, &r->day, &r->hms, &r->iso, &r->stamp, &r->instance,
                                  &r->qid, &r->rcpt, &r->domain, &r->code, &r->enhanced,
                                  &r->text, &r->relay};
        for (size_t i = 0; i < sizeof spans / sizeof *spans; i++)
            check_span(b, r, spans[i], 1);
        if (r->status < BX_SENT || r->status > BX_BOUNCED || r->qid.len <= 0
            || (r->code.len >= 0 && r->code.len != 3))
            abort();
    } else if (r->kind != BX_SLOW) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unsigned char *block = malloc(size + 1);
    if (block == NULL)
        return 0;
    memcpy(block, data, size);
    block[size] = '\n';
    bx_scanner scanner;
    bx_record records[7]; /* small: the scan stops and resumes often */
    size_t n, last = 0;
    if (bx_init(&scanner, block, size + 1) == 0)
        while ((n = bx_next(&scanner, records, sizeof records / sizeof *records)) > 0)
            for (size_t i = 0; i < n; i++)
                check(block, size + 1, &records[i], &last);
    /* bx_count_lines counts the newlines, from every start near the block's start */
    for (size_t from = 0; from <= size + 1 && from < 40; from += 1 + from / 4) {
        size_t want = 0;
        for (size_t i = from; i < size + 1; i++)
            want += block[i] == '\n';
        if (bx_count_lines(block + from, size + 1 - from) != want)
            abort();
    }
    /* bx_find is memmem, at every start (the SIMD part and the tail alike) */
    static const char *const needles[] = {"status=", ": removed", "ab", "\n\n", "said: "};
    for (size_t k = 0; k < sizeof needles / sizeof *needles; k++) {
        size_t m = strlen(needles[k]);
        for (size_t from = 0; from <= size + 1; from += 1 + from / 4)
            if (bx_find(block + from, size + 1 - from, needles[k], m)
                != memmem(block + from, size + 1 - from, needles[k], m))
                abort();
    }
    /* the block as given (it may not end with a newline): refused, never read past */
    if (bx_init(&scanner, block, size) == 0)
        while ((n = bx_next(&scanner, records, 7)) > 0) {
        }
    free(block);
    return 0;
}
