/* The Postfix block scan, in C: which lines to look at, and the delivery agent's line read whole.
 *
 * The oracle is the pure-Python parser (parsers/postfix.py): bx_next finds the lines exactly as
 * PostfixParser.parse_block does (its two find loops), and bx_delivery gives a line's fields only
 * where the regex _AGENT_DELIVERY, followed by _delivery(), gives the same. The regex is read here
 * deterministically: at each choice point the alternative the regex tries first is taken, and
 * wherever that path fails the line is handed back (BX_SLOW) instead of backtracking, so a line
 * read here is read as the regex reads it, and any other goes to Python. Only lines of printable
 * ASCII are read (decoding is then the identity, and the regex's \s is a blank).
 *
 * Every read is bounded by the line's end; the scanner never reads past the block.
 */
#define _GNU_SOURCE
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "fastscan.h"

static const char STATUS[] = "status=";
static const char REMOVED[] = ": removed";
#define STATUS_LEN 7
#define REMOVED_LEN 9

/* -- the scan: the lines parse_block looks at ------------------------------------------------ */

int bx_init(bx_scanner *s, const unsigned char *buf, size_t len) {
    s->buf = buf;
    s->len = len;
    s->pos = 0;
    s->status = s->removed = -2;
    if (len == 0 || buf[len - 1] != '\n')
        return -1;
    return 0;
}

/* memmem(hay, n, needle, m) for m >= 2, 16 places at a time where SSE2 is there (every x86-64):
 * the places whose byte is the needle's first and whose byte m - 1 further is its last are the
 * only ones compared whole (W. Mula's "generic SIMD" search). The same answer as memmem. */
const unsigned char *bx_find(const unsigned char *hay, size_t n, const char *needle, size_t m) {
    size_t i = 0;
#if defined(__SSE2__)
    if (m >= 2) {
        const __m128i first = _mm_set1_epi8(needle[0]), last = _mm_set1_epi8(needle[m - 1]);
        for (; i + m - 1 + 16 <= n; i += 16) {
            __m128i a = _mm_loadu_si128((const __m128i *)(hay + i));
            __m128i z = _mm_loadu_si128((const __m128i *)(hay + i + m - 1));
            unsigned mask = (unsigned)_mm_movemask_epi8(
                _mm_and_si128(_mm_cmpeq_epi8(a, first), _mm_cmpeq_epi8(z, last)));
            while (mask != 0) {
                size_t at = i + (size_t)__builtin_ctz(mask);
                if (memcmp(hay + at + 1, needle + 1, m - 2) == 0)
                    return hay + at;
                mask &= mask - 1;
            }
        }
    }
#endif
    return memmem(hay + i, n - i, needle, m);
}

/* The newlines in [b, b + n): 16 bytes at a time where SSE2 is there (per byte counters, summed
 * every 255 rounds before they overflow). */
size_t bx_count_lines(const unsigned char *b, size_t n) {
    size_t total = 0, i = 0;
#if defined(__SSE2__)
    const __m128i nl = _mm_set1_epi8('\n'), zero = _mm_setzero_si128();
    while (i + 16 <= n) {
        __m128i counts = zero;
        for (int round = 0; round < 255 && i + 16 <= n; round++, i += 16)
            counts = _mm_sub_epi8(counts, _mm_cmpeq_epi8(
                                              _mm_loadu_si128((const __m128i *)(b + i)), nl));
        __m128i sums = _mm_sad_epu8(counts, zero);
        total += (size_t)_mm_cvtsi128_si32(sums) + (size_t)_mm_extract_epi16(sums, 4);
    }
#endif
    for (; i < n; i++)
        total += b[i] == '\n';
    return total;
}

static ssize_t find(const bx_scanner *s, size_t from, const char *what, size_t size) {
    if (from >= s->len)
        return -1;
    const unsigned char *at = bx_find(s->buf + from, s->len - from, what, size);
    return at ? (ssize_t)(at - s->buf) : -1;
}

static size_t line_start(const unsigned char *buf, size_t at) {
    const unsigned char *nl = memrchr(buf, '\n', at);
    return nl ? (size_t)(nl - buf) + 1 : 0;
}

/* 1 when [from, to) is all printable ASCII (0x20 to 0x7e) */
static int printable(const unsigned char *b, size_t from, size_t to) {
    size_t i = from;
#if defined(__SSE2__)
    const __m128i space = _mm_set1_epi8(0x20), del = _mm_set1_epi8(0x7f);
    for (; i + 16 <= to; i += 16) { /* as signed bytes, 0x80 to 0xff are below 0x20 too */
        __m128i v = _mm_loadu_si128((const __m128i *)(b + i));
        if (_mm_movemask_epi8(_mm_or_si128(_mm_cmplt_epi8(v, space), _mm_cmpeq_epi8(v, del))))
            return 0;
    }
#endif
    for (; i < to; i++)
        if (b[i] < 0x20 || b[i] > 0x7e)
            return 0;
    return 1;
}

static void span(bx_span *sp, size_t from, size_t to) {
    sp->off = from;
    sp->len = (ssize_t)(to - from);
}

static const bx_span NONE = {0, -1};

/* A ": removed" line: its queue id is the word before ": removed" (_forget_removed). */
static void removed_record(const unsigned char *buf, size_t start, size_t end, bx_record *r) {
    memset(r, 0, sizeof *r);
    r->kind = BX_REMOVED;
    r->start = start;
    r->end = end;
    size_t stop = end - REMOVED_LEN, from = stop;
    while (from > start && buf[from - 1] != ' ')
        from--;
    r->qid = NONE;
    for (size_t i = from; i < stop; i++)
        if (buf[i] < 0x20 || buf[i] > 0x7e)
            return; /* not ASCII: decoding could change it, Python reads the line */
    span(&r->qid, from, stop);
}

size_t bx_next(bx_scanner *s, bx_record *out, size_t cap) {
    const unsigned char *buf = s->buf;
    size_t n = 0;
    if (s->len == 0 || buf[s->len - 1] != '\n')
        return 0;
    if (s->status == -2)
        s->status = find(s, 0, STATUS, STATUS_LEN);
    if (s->removed == -2)
        s->removed = find(s, 0, REMOVED, REMOVED_LEN);
    while (n < cap && (s->status >= 0 || s->removed >= 0)) {
        bx_record *r = &out[n];
        if (s->removed < 0 || (s->status >= 0 && s->status < s->removed)) {
            size_t start = line_start(buf, (size_t)s->status);
            /* a newline follows: the block ends with one */
            const unsigned char *nl = memchr(buf + s->status, '\n', s->len - (size_t)s->status);
            size_t end = (size_t)(nl - buf), cut = end;
            if (buf[end - 1] == '\r')
                cut = end - 1;
            if (!bx_delivery(buf, start, cut, r)) {
                memset(r, 0, sizeof *r);
                r->kind = BX_SLOW;
                r->start = start;
                r->end = cut;
            }
            n++;
            s->status = find(s, end, STATUS, STATUS_LEN);
            if (s->removed >= 0 && (size_t)s->removed < end)
                s->removed = find(s, end, REMOVED, REMOVED_LEN);
        } else {
            size_t end = (size_t)s->removed + REMOVED_LEN; /* < len: a newline follows */
            if (buf[end] == '\n' || (buf[end] == '\r' && end + 1 < s->len && buf[end + 1] == '\n')) {
                removed_record(buf, line_start(buf, (size_t)s->removed), end, r);
                n++;
            }
            s->removed = find(s, end, REMOVED, REMOVED_LEN);
        }
    }
    return n;
}

/* -- the delivery agent's line ------------------------------------------------------------- */

typedef struct {
    const unsigned char *b;
    size_t p, end; /* the cursor and the line's end */
} cursor;

static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_word(int c) {
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static int at_end(const cursor *c) { return c->p >= c->end; }
static int peek(const cursor *c) { return c->p < c->end ? c->b[c->p] : -1; }

/* the literal at the cursor (taken) */
static int take(cursor *c, const char *lit) {
    size_t n = strlen(lit);
    if (c->end - c->p < n || memcmp(c->b + c->p, lit, n) != 0)
        return 0;
    c->p += n;
    return 1;
}

static int starts(const cursor *c, const char *lit) {
    size_t n = strlen(lit);
    return c->end - c->p >= n && memcmp(c->b + c->p, lit, n) == 0;
}

/* a run of digits: its length */
static size_t digits(cursor *c) {
    size_t from = c->p;
    while (!at_end(c) && is_digit(c->b[c->p]))
        c->p++;
    return c->p - from;
}

static int exactly_digits(cursor *c, size_t n) {
    for (size_t i = 0; i < n; i++, c->p++)
        if (at_end(c) || !is_digit(c->b[c->p]))
            return 0;
    return 1;
}

/* -- RFC 3339 stamps with an offset: their Unix time, exactly as Python's ------------------- */

static long days_from_civil(long y, unsigned m, unsigned d) { /* H. Hinnant's algorithm */
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long)doe - 719468;
}

static unsigned number(const unsigned char *b, size_t n) {
    unsigned v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (unsigned)(b[i] - '0');
    return v;
}

/* The stamp [from, to) matched the iso group: "YYYY-MM-DDTHH:MM:SS", 1 to 6 digits of fraction,
 * then Z, +HH:MM or +HHMM. datetime.fromisoformat(stamp).timestamp() is the microseconds since
 * 1970 over 10**6, rounded once: so is this (both exact in a double before the division, for
 * years 1970 to 2200). Anything else (no offset: local time; a day that does not exist; more
 * digits) is left to Python: 0. */
static int iso_time(const unsigned char *b, size_t from, size_t to, double *when) {
    const unsigned char *p = b + from;
    size_t n = to - from;
    if (n < 20)
        return 0;
    unsigned year = number(p, 4), month = number(p + 5, 2), day = number(p + 8, 2);
    unsigned hour = number(p + 11, 2), minute = number(p + 14, 2), second = number(p + 17, 2);
    static const unsigned days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (year < 1970 || year > 2200 || month < 1 || month > 12 || hour > 23 || minute > 59
        || second > 59 || day < 1)
        return 0;
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day > days[month - 1] + (month == 2 && leap))
        return 0;
    size_t i = 19;
    long long micro = 0;
    if (p[i] == '.') {
        size_t digits_from = ++i;
        while (i < n && is_digit(p[i]))
            i++;
        size_t k = i - digits_from;
        if (k < 1 || k > 6)
            return 0;
        micro = number(p + digits_from, k);
        for (; k < 6; k++)
            micro *= 10;
    }
    long offset;
    if (i + 1 == n && p[i] == 'Z') {
        offset = 0;
    } else if ((i + 6 == n && p[i + 3] == ':') || i + 5 == n) {
        if (p[i] != '+' && p[i] != '-')
            return 0;
        unsigned oh = number(p + i + 1, 2), om = number(p + n - 2, 2);
        if (oh > 23 || om > 59)
            return 0;
        offset = (p[i] == '-' ? -1 : 1) * (long)(oh * 3600 + om * 60);
    } else {
        return 0;
    }
    long long seconds = (long long)days_from_civil(year, month, day) * 86400 + hour * 3600
                        + minute * 60 + second - offset;
    *when = (double)(seconds * 1000000 + micro) / 1e6;
    return 1;
}

/* STAMP: BSD "Mon dd hh:mm:ss(.frac)" or RFC 3339, as groups mon, day, hms / iso */
static int stamp(cursor *c, bx_record *r) {
    size_t from = c->p;
    r->mon = r->day = r->hms = r->iso = NONE;
    int first = peek(c);
    if (first >= 'A' && first <= 'Z') {
        if (c->end - c->p < 3 || !(c->b[c->p + 1] >= 'a' && c->b[c->p + 1] <= 'z')
            || !(c->b[c->p + 2] >= 'a' && c->b[c->p + 2] <= 'z'))
            return 0;
        span(&r->mon, c->p, c->p + 3);
        c->p += 3;
        if (peek(c) != ' ')
            return 0;
        while (peek(c) == ' ')
            c->p++;
        size_t day = c->p, n = digits(c);
        if (n < 1 || n > 2)
            return 0;
        span(&r->day, day, c->p);
        if (!take(c, " "))
            return 0;
        size_t hms = c->p;
        if (!exactly_digits(c, 2) || !take(c, ":") || !exactly_digits(c, 2) || !take(c, ":")
            || !exactly_digits(c, 2))
            return 0;
        span(&r->hms, hms, c->p);
        if (peek(c) == '.' && c->p + 1 < c->end && is_digit(c->b[c->p + 1])) {
            c->p++;
            digits(c);
        }
    } else if (is_digit(first)) {
        if (!exactly_digits(c, 4) || !take(c, "-") || !exactly_digits(c, 2) || !take(c, "-")
            || !exactly_digits(c, 2) || !take(c, "T") || !exactly_digits(c, 2) || !take(c, ":")
            || !exactly_digits(c, 2) || !take(c, ":") || !exactly_digits(c, 2))
            return 0;
        if (peek(c) == '.' && c->p + 1 < c->end && is_digit(c->b[c->p + 1])) {
            c->p++;
            digits(c);
        }
        if (peek(c) == 'Z') {
            c->p++;
        } else if (peek(c) == '+' || peek(c) == '-') {
            c->p++;
            if (!exactly_digits(c, 2))
                return 0;
            take(c, ":");
            if (!exactly_digits(c, 2))
                return 0;
        }
        span(&r->iso, from, c->p);
        r->has_when = iso_time(c->b, from, c->p, &r->when);
    } else {
        return 0;
    }
    span(&r->stamp, from, c->p);
    return 1;
}

/* a run of bytes that are none of `stop` (and no blank): its length */
static size_t run_until(cursor *c, const char *stop) {
    uint64_t ends[4] = {1, 0, 0, 0}; /* the bytes that end the run: NUL (strchr's), blank, stop */
    ends[' ' >> 6] |= (uint64_t)1 << (' ' & 63);
    for (const unsigned char *s = (const unsigned char *)stop; *s; s++)
        ends[*s >> 6] |= (uint64_t)1 << (*s & 63);
    size_t from = c->p;
    while (!at_end(c) && !((ends[c->b[c->p] >> 6] >> (c->b[c->p] & 63)) & 1))
        c->p++;
    return c->p - from;
}

static const char *const AGENTS[] = {"discard", "error", "lmtp", "local", "pipe", "retry",
                                     "smtp", "virtual", NULL};

/* "instance/(seg/)*agent([pid])?: " */
static int program(cursor *c, bx_record *r) {
    size_t from = c->p;
    if (run_until(c, "[:/") == 0)
        return 0;
    span(&r->instance, from, c->p);
    if (!take(c, "/"))
        return 0;
    for (;;) {
        size_t seg = c->p, n = run_until(c, "[:/");
        if (n == 0)
            return 0;
        if (peek(c) == '/') {
            c->p++;
            continue;
        }
        int agent = 0;
        for (const char *const *a = AGENTS; *a; a++)
            if (strlen(*a) == n && memcmp(c->b + seg, *a, n) == 0)
                agent = 1;
        if (!agent)
            return 0;
        break;
    }
    if (peek(c) == '[') {
        c->p++;
        if (digits(c) == 0 || !take(c, "]"))
            return 0;
    }
    return take(c, ": ");
}

/* (?:<(?P<n>[^>]*)>|(?P<n_bare>[^\s,]*)) then ", ": the first alternative that reaches ", " */
static int address(cursor *c, bx_span *value) {
    if (peek(c) == '<') {
        const unsigned char *gt = memchr(c->b + c->p + 1, '>', c->end - c->p - 1);
        if (gt != NULL) {
            size_t close = (size_t)(gt - c->b);
            cursor after = {c->b, close + 1, c->end};
            if (take(&after, ", ")) {
                span(value, c->p + 1, close);
                c->p = after.p;
                return 1;
            }
        }
    }
    size_t from = c->p;
    run_until(c, ",");
    span(value, from, c->p);
    return take(c, ", ");
}

/* REPLY at the cursor after blanks: (?P<code>[2-5]\d\d)(?![^\s\-])(?:[ -](?P<enhanced>ENHANCED))?
 * with ENHANCED = [245]\.\d{1,3}\.\d{1,3}(?!\.?\d); lookaheads see up to `end`. */
static int reply_at(const unsigned char *b, size_t p, size_t end, bx_span *code, bx_span *enh) {
    while (p < end && b[p] == ' ')
        p++;
    if (end - p < 3 || b[p] < '2' || b[p] > '5' || !is_digit(b[p + 1]) || !is_digit(b[p + 2]))
        return 0;
    size_t q = p + 3;
    if (q < end && b[q] != ' ' && b[q] != '-')
        return 0;
    span(code, p, q);
    *enh = NONE;
    if (q < end && (b[q] == ' ' || b[q] == '-')) {
        cursor c = {b, q + 1, end};
        size_t from = c.p;
        int first = peek(&c);
        if (first == '2' || first == '4' || first == '5') {
            c.p++;
            size_t n1 = 0, n2 = 0;
            if (take(&c, ".") && (n1 = digits(&c)) >= 1 && n1 <= 3 && take(&c, ".")
                && (n2 = digits(&c)) >= 1 && n2 <= 3) {
                int next = peek(&c);
                int dot_digit = next == '.' && c.p + 1 < end && is_digit(b[c.p + 1]);
                if (!is_digit(next) && !dot_digit)
                    span(enh, from, c.p);
            }
        }
    }
    return 1;
}

/* _REPLY_AT_START at the text's start: (?:host \S+ (?:said|refused to talk to me): )?\s*REPLY */
static int reply_at_start(const unsigned char *b, size_t text, size_t line_end, bx_span *code,
                          bx_span *enh) {
    cursor c = {b, text, line_end};
    if (take(&c, "host ") && run_until(&c, "") > 0
        && (take(&c, " said: ") || take(&c, " refused to talk to me: "))
        && reply_at(b, c.p, line_end, code, enh))
        return 1;
    return reply_at(b, text, line_end, code, enh);
}

/* find_reply(text): the first (?:^|said: |refused to talk to me: )\s*REPLY in the text alone */
static int find_reply(const unsigned char *b, size_t from, size_t to, bx_span *code,
                      bx_span *enh) {
    for (size_t p = from; p <= to; p++) {
        cursor c = {b, p, to};
        if (p == from && reply_at(b, p, to, code, enh))
            return 1;
        if ((take(&c, "said: ") || take(&c, "refused to talk to me: "))
            && reply_at(b, c.p, to, code, enh))
            return 1;
    }
    return 0;
}

/* postfix_relay(relay): host [^\s\[,]*, then [ip] if closed; relay_host()'s one form. 0: the
 * value is not read here (Python reads the line). */
static int relay_of(const unsigned char *b, size_t from, size_t to, bx_span *out) {
    size_t h = from;
    while (h < to && b[h] != ' ' && b[h] != '[' && b[h] != ',')
        h++;
    bx_span ip = NONE;
    if (h < to && b[h] == '[') {
        const unsigned char *close = memchr(b + h + 1, ']', to - h - 1);
        if (close != NULL)
            span(&ip, h + 1, (size_t)(close - b));
    }
    size_t s = from, e = h; /* .strip("[]").rstrip(".") */
    while (s < e && (b[s] == '[' || b[s] == ']'))
        s++;
    while (e > s && (b[e - 1] == '[' || b[e - 1] == ']'))
        e--;
    while (e > s && b[e - 1] == '.')
        e--;
    size_t n = e - s;
    int nothing = n == 0 || (n == 4 && strncasecmp((const char *)b + s, "none", 4) == 0)
                  || (n == 7 && strncasecmp((const char *)b + s, "unknown", 7) == 0);
    if (!nothing) {
        span(out, s, e);
        return 1;
    }
    *out = NONE;
    if (ip.len > 0) { /* (ip or "").strip().lower(); a "/" in it: a socket */
        s = ip.off;
        e = ip.off + (size_t)ip.len;
        while (s < e && b[s] == ' ')
            s++;
        while (e > s && b[e - 1] == ' ')
            e--;
        if (e > s && memchr(b + s, '/', e - s) == NULL)
            span(out, s, e);
    }
    return 1;
}

static int lower_is(const unsigned char *b, size_t p, size_t end, const char *lit) {
    size_t n = strlen(lit);
    return end - p >= n && strncasecmp((const char *)b + p, lit, n) == 0;
}

/* find_relay_in_line(text) where the text is printable ASCII: the first match, left to right, of
 * _IN_LINE (relay/parsers/relay.py; IGNORECASE). Read here: its Postfix alternative,
 * \b(?:connect to|host|lost connection with|conversation with) NAMED\.?\[ with NAMED =
 * [A-Za-z0-9][\w.-]*\.[A-Za-z][\w-]*, whose host (relay_host: lower-cased, never "none",
 * "local"...: it holds a dot) is the answer. Where its relay= or H= alternative could start, 0:
 * Python reads the line. No match: out is absent (None). */
static int relay_in_text(const unsigned char *b, bx_span text, bx_span *out) {
    static const char *const WORDS[] = {"connect to ", "host ", "lost connection with ",
                                        "conversation with ", NULL};
    *out = NONE;
    if (text.len <= 0)
        return 1;
    size_t from = text.off, end = text.off + (size_t)text.len;
    for (size_t p = from; p < end; p++) {
        if (p > from && is_word(b[p - 1]))
            continue; /* \b: every alternative starts with a word character */
        if (lower_is(b, p, end, "relay=") || lower_is(b, p, end, "h="))
            return 0;
        for (const char *const *w = WORDS; *w; w++) {
            if (!lower_is(b, p, end, *w))
                continue;
            size_t q = p + strlen(*w), e = q, dot = 0;
            while (e < end && (is_word(b[e]) || b[e] == '.' || b[e] == '-'))
                e++;
            if (e >= end || b[e] != '[' || e == q || !(is_word(b[q]) && b[q] != '_'))
                break; /* no NAMED\.?\[ here */
            size_t named = b[e - 1] == '.' ? e - 1 : e; /* \.? takes a last dot */
            for (size_t i = q; i < named; i++)
                if (b[i] == '.')
                    dot = i + 1;
            if (named == q || b[named - 1] == '.' || dot == 0 || dot >= named
                || !((b[dot] >= 'a' && b[dot] <= 'z') || (b[dot] >= 'A' && b[dot] <= 'Z')))
                break;
            span(out, q, named);
            return 1;
        }
    }
    return 1;
}

/* domain_of(recipient): after the last '@', blanks stripped, then trailing dots */
static void domain_of(const unsigned char *b, const bx_span *rcpt, bx_span *out) {
    *out = NONE;
    if (rcpt->len <= 0)
        return;
    size_t s = rcpt->off, e = rcpt->off + (size_t)rcpt->len, at = e;
    while (at > s && b[at - 1] != '@')
        at--;
    if (at == s || at == e)
        return; /* no '@', or nothing after it */
    s = at;
    while (s < e && b[s] == ' ')
        s++;
    while (e > s && b[e - 1] == ' ')
        e--;
    while (e > s && b[e - 1] == '.')
        e--;
    span(out, s, e);
}

static int status_of(const unsigned char *b, size_t from, size_t n) {
    if (n == 4 && memcmp(b + from, "sent", 4) == 0)
        return BX_SENT;
    if (n == 8 && memcmp(b + from, "deferred", 8) == 0)
        return BX_DEFERRED;
    if (n == 10 && memcmp(b + from, "SOFTBOUNCE", 10) == 0)
        return BX_DEFERRED;
    if (n == 7 && memcmp(b + from, "bounced", 7) == 0)
        return BX_BOUNCED;
    return -1; /* not a delivery (address verification and the like): Python decides */
}

/* the fields of ", orig_to=..., relay=R, conn_use=N, delay=D, delays=DS, dsn=X, " up to status= */
static int delivery_fields(cursor *c, bx_record *r, bx_span *dsn) {
    bx_span ignored;
    if (starts(c, "orig_to=")) {
        c->p += 8;
        if (!address(c, &ignored))
            return 0;
    }
    if (!take(c, "relay="))
        return 0;
    const unsigned char *comma = memchr(c->b + c->p, ',', c->end - c->p);
    if (comma == NULL)
        return 0;
    span(&r->relay, c->p, (size_t)(comma - c->b));
    c->p = (size_t)(comma - c->b);
    if (!take(c, ", "))
        return 0;
    if (take(c, "conn_use=") && (digits(c) == 0 || !take(c, ", ")))
        return 0;
    if (!take(c, "delay="))
        return 0;
    size_t from = c->p;
    while (!at_end(c) && (is_digit(c->b[c->p]) || c->b[c->p] == '.'))
        c->p++;
    if (c->p == from || !take(c, ", "))
        return 0;
    if (take(c, "delays=")) {
        from = c->p;
        while (!at_end(c) && (is_digit(c->b[c->p]) || c->b[c->p] == '.' || c->b[c->p] == '/'))
            c->p++;
        if (c->p == from || !take(c, ", "))
            return 0;
    }
    *dsn = NONE;
    if (take(c, "dsn=")) { /* \d\.\d{1,3}\.\d{1,3}, then ", " */
        from = c->p;
        size_t n1 = 0, n2 = 0;
        if (!exactly_digits(c, 1) || !take(c, ".") || (n1 = digits(c)) < 1 || n1 > 3
            || !take(c, ".") || (n2 = digits(c)) < 1 || n2 > 3)
            return 0;
        span(dsn, from, c->p);
        if (!take(c, ", "))
            return 0;
    }
    return 1;
}

int bx_delivery(const unsigned char *b, size_t start, size_t end, bx_record *r) {
    memset(r, 0, sizeof *r);
    if (!printable(b, start, end))
        return 0;
    r->kind = BX_DELIVERY;
    r->start = start;
    r->end = end;
    cursor c = {b, start, end};
    if (!stamp(&c, r) || !take(&c, " ") || run_until(&c, "") == 0 || !take(&c, " "))
        return 0;
    if (!program(&c, r))
        return 0;
    while (peek(&c) == ' ')
        c.p++;
    size_t qid = c.p;
    if (run_until(&c, ":") == 0)
        return 0;
    span(&r->qid, qid, c.p);
    bx_span dsn;
    if (!take(&c, ": to=") || !address(&c, &r->rcpt) || !delivery_fields(&c, r, &dsn)
        || !take(&c, "status="))
        return 0;
    size_t status = c.p;
    while (!at_end(&c) && (is_word(c.b[c.p]) || c.b[c.p] == '-'))
        c.p++;
    if (c.p == status || (r->status = status_of(b, status, c.p - status)) < 0)
        return 0;
    /* (?: \((?P<text>...)\))?\s*$ : the text up to the last ")" before trailing blanks */
    size_t tail = end;
    while (tail > c.p && b[tail - 1] == ' ')
        tail--;
    r->text = r->code = r->enhanced = NONE;
    if (tail == c.p) {
        /* no text: no code either */
    } else if (starts(&c, " (") && tail >= c.p + 3 && b[tail - 1] == ')') {
        span(&r->text, c.p + 2, tail - 1);
        size_t text_end = tail - 1;
        if (reply_at_start(b, c.p + 2, end, &r->code, &r->enhanced)) {
            size_t last = r->enhanced.len >= 0 ? r->enhanced.off + (size_t)r->enhanced.len
                                               : r->code.off + (size_t)r->code.len;
            if (last > text_end)
                return 0; /* the regex would read the text otherwise */
        } else {
            r->code = r->enhanced = NONE;
            if (!find_reply(b, c.p + 2, text_end, &r->code, &r->enhanced))
                r->code = r->enhanced = NONE;
        }
    } else {
        return 0;
    }
    if (dsn.len > 0)
        r->enhanced = dsn;
    if (r->relay.len == 4 && memcmp(b + r->relay.off, "none", 4) == 0) {
        /* relay=none: the host the text names (find_relay_in_line), or 0: Python reads it */
        if (!relay_in_text(b, r->text, &r->relay))
            return 0;
    } else if (!relay_of(b, r->relay.off, r->relay.off + (size_t)r->relay.len, &r->relay)) {
        return 0;
    }
    domain_of(b, &r->rcpt, &r->domain);
    return 1;
}
