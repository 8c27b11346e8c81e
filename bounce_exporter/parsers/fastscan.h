/* The Postfix block scan's pure C core (no Python objects): see fastscan_core.c.
 *
 * A block is bytes holding complete log lines, the last byte a newline. The scanner hands out, in
 * line order, one record per line the Postfix parser looks at (parsers/postfix.py parse_block):
 *   BX_DELIVERY  a delivery agent's line read whole here (the parser's _AGENT_DELIVERY regex
 *                would give the same groups): its fields as spans of the block;
 *   BX_SLOW      a line with "status=" that the core does not read (non-ASCII or control bytes,
 *                an expiry, a shape it does not take): Python's parser reads it;
 *   BX_REMOVED   a line ending in ": removed": the queue id before it (qid) when it is printable
 *                ASCII, else qid.len < 0 (Python reads the line).
 * A span with len < 0 is absent (Python None). Spans never reach outside [start, end).
 */
#ifndef BX_FASTSCAN_H
#define BX_FASTSCAN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum { BX_DELIVERY = 1, BX_SLOW = 2, BX_REMOVED = 3 };
enum { BX_SENT = 0, BX_DEFERRED = 1, BX_BOUNCED = 2 };

typedef struct {
    size_t off;
    ssize_t len; /* < 0: absent */
} bx_span;

typedef struct {
    int kind;
    size_t start, end;          /* the line, without its newline and a CR before it */
    bx_span mon, day, hms, iso; /* the stamp (STAMP's groups) */
    bx_span stamp;              /* the whole stamp, to see that the next line has the same one */
    int has_when;               /* an RFC 3339 stamp with its offset, read here: */
    double when;                /* its Unix time, as datetime.fromisoformat().timestamp() */
    bx_span instance, qid, rcpt;
    bx_span domain;             /* to be lower-cased */
    int status;                 /* BX_SENT, BX_DEFERRED, BX_BOUNCED */
    bx_span code, enhanced;     /* enhanced: dsn= if given, else the reply's */
    bx_span text;               /* absent: "" */
    bx_span relay;              /* to be lower-cased */
} bx_record;

typedef struct {
    const unsigned char *buf;
    size_t len;
    ssize_t status;  /* next "status=" at or after pos, -1 none, -2 not searched yet */
    ssize_t removed; /* next ": removed", the same */
    size_t pos;      /* where the searches go on from */
} bx_scanner;

/* 0, or -1 when the block is empty or does not end with a newline (then nothing is scanned). */
int bx_init(bx_scanner *scanner, const unsigned char *buf, size_t len);

/* Up to cap records into out, in line order; 0 when the block is done. */
size_t bx_next(bx_scanner *scanner, bx_record *out, size_t cap);

/* memmem for needles of 2 bytes or more (SIMD where there is SSE2); the fuzz harness compares. */
const unsigned char *bx_find(const unsigned char *hay, size_t n, const char *needle, size_t m);

/* The number of newlines in [b, b + n) (a block's lines). */
size_t bx_count_lines(const unsigned char *b, size_t n);

/* Read one line [start, end) as a delivery agent's line; 1 and the fields in record, or 0. */
int bx_delivery(const unsigned char *buf, size_t start, size_t end, bx_record *record);

#endif
