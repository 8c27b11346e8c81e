/* bounce_exporter_fastscan: the CPython wrapper of the Postfix block scan (fastscan_core.c).
 *
 *   scan(block) -> list of records, or None when the block is empty or does not end with a
 *   newline (the pure-Python parse_block then reads it: one behaviour for such blocks).
 *
 * Records, in line order (parsers/postfix_fast.py reads them):
 *   (stamp, instance, qid, recipient, domain, status, code, enhanced, text, relay, start, end)
 *       a delivery read whole; stamp is the line's Unix time (a float) when the core read it
 *       (an RFC 3339 stamp with its offset), else (mon, day, hms, iso) for StampReader: the
 *       same object as the previous delivery record's when the stamp's bytes are the same;
 *       domain and relay are lower-cased; text is "" when the line has none; start, end: the
 *       line in the block;
 *   (start, end)              a "status=" line for Python's parser (block[start:end]);
 *   (qid, start, end)         a ": removed" line; qid None when Python must read the line.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "fastscan.h"

#define ABI_VERSION 1 /* parsers/accel.py checks it: a stale build is not used */
#define CHUNK 256

static PyObject *STATUS_NAMES[3];
static PyObject *CODES[1000];

static PyObject *text_of(const unsigned char *b, const bx_span *sp, int lower) {
    if (sp->len < 0)
        Py_RETURN_NONE;
    PyObject *s = PyUnicode_New(sp->len, 127); /* printable ASCII: checked by the core */
    if (s == NULL)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(s);
    const unsigned char *in = b + sp->off;
    if (lower) {
        for (Py_ssize_t i = 0; i < sp->len; i++)
            out[i] = (in[i] >= 'A' && in[i] <= 'Z') ? in[i] + 32 : in[i];
    } else {
        memcpy(out, in, (size_t)sp->len);
    }
    return s;
}

/* Domains and relay hosts repeat: the string made last time for the same (lower-cased) bytes */
#define CACHE_SLOTS 1024
#define CACHE_MAX_LEN 128
static PyObject *CACHE[CACHE_SLOTS];

static PyObject *lower_cached(const unsigned char *b, const bx_span *sp) {
    if (sp->len < 0 || sp->len > CACHE_MAX_LEN)
        return text_of(b, sp, 1);
    unsigned char low[CACHE_MAX_LEN];
    uint32_t hash = 2166136261u; /* FNV-1a */
    for (Py_ssize_t i = 0; i < sp->len; i++) {
        unsigned char c = b[sp->off + (size_t)i];
        low[i] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
        hash = (hash ^ low[i]) * 16777619u;
    }
    PyObject **slot = &CACHE[hash % CACHE_SLOTS];
    if (*slot == NULL || PyUnicode_GET_LENGTH(*slot) != sp->len
        || memcmp(PyUnicode_1BYTE_DATA(*slot), low, (size_t)sp->len) != 0) {
        bx_span whole = {0, sp->len};
        PyObject *fresh = text_of(low, &whole, 0);
        if (fresh == NULL)
            return NULL;
        Py_XSETREF(*slot, fresh);
    }
    Py_INCREF(*slot);
    return *slot;
}

static PyObject *code_of(const unsigned char *b, const bx_span *sp) {
    if (sp->len != 3)
        return text_of(b, sp, 0);
    int n = (b[sp->off] - '0') * 100 + (b[sp->off + 1] - '0') * 10 + (b[sp->off + 2] - '0');
    if (CODES[n] == NULL && (CODES[n] = text_of(b, sp, 0)) == NULL)
        return NULL;
    Py_INCREF(CODES[n]);
    return CODES[n];
}

typedef struct {
    const unsigned char *b;
    const bx_record *rec; /* the record being turned into a tuple */
    bx_span stamp, instance; /* of the previous delivery record */
    PyObject *stamp_obj, *instance_obj;
} reuse;

static int same(const unsigned char *b, const bx_span *a, const bx_span *c) {
    return a->len >= 0 && a->len == c->len && memcmp(b + a->off, b + c->off, (size_t)a->len) == 0;
}

/* the object of `sp`: the previous one when the bytes are the same */
static PyObject *reused(reuse *r, bx_span *held, PyObject **obj, const bx_span *sp,
                        PyObject *(*make)(reuse *, const bx_span *)) {
    if (*obj == NULL || !same(r->b, held, sp)) {
        PyObject *fresh = make(r, sp);
        if (fresh == NULL)
            return NULL;
        Py_XSETREF(*obj, fresh);
        *held = *sp;
    }
    Py_INCREF(*obj);
    return *obj;
}

static PyObject *make_stamp(reuse *r, const bx_span *sp) {
    (void)sp;
    const bx_record *rec = r->rec;
    if (rec->has_when)
        return PyFloat_FromDouble(rec->when);
    return Py_BuildValue("(NNNN)", text_of(r->b, &rec->mon, 0), text_of(r->b, &rec->day, 0),
                         text_of(r->b, &rec->hms, 0), text_of(r->b, &rec->iso, 0));
}

static PyObject *make_text(reuse *r, const bx_span *sp) { return text_of(r->b, sp, 0); }

static PyObject *delivery(reuse *r, const bx_record *rec) {
    const unsigned char *b = r->b;
    r->rec = rec;
    PyObject *stamp = reused(r, &r->stamp, &r->stamp_obj, &rec->stamp, make_stamp);
    PyObject *instance = reused(r, &r->instance, &r->instance_obj, &rec->instance, make_text);
    PyObject *status = STATUS_NAMES[rec->status];
    Py_INCREF(status);
    bx_span empty = {rec->start, 0};
    PyObject *items[12] = {
        stamp, instance, text_of(b, &rec->qid, 0), text_of(b, &rec->rcpt, 0),
        lower_cached(b, &rec->domain), status, code_of(b, &rec->code),
        text_of(b, &rec->enhanced, 0), text_of(b, rec->text.len < 0 ? &empty : &rec->text, 0),
        lower_cached(b, &rec->relay), PyLong_FromSsize_t((Py_ssize_t)rec->start),
        PyLong_FromSsize_t((Py_ssize_t)rec->end),
    };
    PyObject *tuple = PyTuple_New(12);
    for (int i = 0; i < 12; i++) {
        if (items[i] == NULL || tuple == NULL) { /* out of memory: let go of everything */
            for (int j = 0; j < 12; j++)
                Py_XDECREF(items[j]);
            Py_XDECREF(tuple);
            return NULL;
        }
    }
    for (int i = 0; i < 12; i++)
        PyTuple_SET_ITEM(tuple, i, items[i]);
    return tuple;
}

static PyObject *record(reuse *r, const bx_record *rec) {
    switch (rec->kind) {
    case BX_DELIVERY:
        return delivery(r, rec);
    case BX_REMOVED:
        return Py_BuildValue("(Nnn)", text_of(r->b, &rec->qid, 0), (Py_ssize_t)rec->start,
                             (Py_ssize_t)rec->end);
    default:
        return Py_BuildValue("(nn)", (Py_ssize_t)rec->start, (Py_ssize_t)rec->end);
    }
}

static PyObject *scan(PyObject *module, PyObject *arg) {
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    bx_scanner scanner;
    if (bx_init(&scanner, view.buf, (size_t)view.len) < 0) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    PyObject *out = PyList_New(0);
    reuse r = {view.buf, NULL, {0, -1}, {0, -1}, NULL, NULL};
    bx_record records[CHUNK];
    size_t n;
    while (out != NULL && (n = bx_next(&scanner, records, CHUNK)) > 0) {
        for (size_t i = 0; i < n; i++) {
            PyObject *item = record(&r, &records[i]);
            if (item == NULL || PyList_Append(out, item) < 0) {
                Py_XDECREF(item);
                Py_CLEAR(out);
                break;
            }
            Py_DECREF(item);
        }
    }
    Py_XDECREF(r.stamp_obj);
    Py_XDECREF(r.instance_obj);
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_O, "The Postfix records of a block of complete lines (see the module)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "bounce_exporter_fastscan",
    "The Postfix block scan in C: an optional speed-up of bounce_exporter.parsers.postfix.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_bounce_exporter_fastscan(void) {
    static const char *names[3] = {"sent", "deferred", "bounced"};
    for (int i = 0; i < 3; i++)
        if (STATUS_NAMES[i] == NULL && (STATUS_NAMES[i] = PyUnicode_InternFromString(names[i])) == NULL)
            return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "ABI_VERSION", ABI_VERSION) < 0)
        Py_CLEAR(m);
    return m;
}
