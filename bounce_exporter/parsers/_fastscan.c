/* bounce_exporter_fastscan: the CPython wrapper of the Postfix block scan (fastscan_core.c).
 *
 *   Reader(...).read(block, ...) -> the block's events, made here (parsers/postfix_fast.py uses
 *   it; see "Reader" below), or None when the block is empty or does not end with a newline.
 *
 *   count_lines(data) -> data.count(b"\n") (sources.lines counts a block's lines with it).
 *
 *   scan(block) -> list of records, or None when the block is empty or does not end with a
 *   newline (the pure-Python parse_block then reads it: one behaviour for such blocks).
 *
 * Records of scan, in line order:
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
#include <structmember.h>

#include "fastscan.h"

#define ABI_VERSION 2 /* parsers/accel.py checks it: a stale build is not used */
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


/* -- Reader: a block's events, made here, with Python called only where order needs it -------
 *
 * Reader(event_type, fields, mta, suspended, suspended_reason).read(block, held, time_of,
 * remember, fallback) -> the list of events of the block (what PostfixParser.parse_block gives),
 * or None when the block is empty or does not end with a newline. In line order:
 *   - a delivery read by the core: its event (event_type's slots filled directly: fields names
 *     them, in the order time, mta, queue_id, recipient, domain, status, code, enhanced, text,
 *     relay, without_attempt); time_of(mon, day, hms, iso) gives its time, called for a
 *     traditional stamp only when its hour (month, day, hour) is not the one of the last call
 *     (StampReader.bsd's own rule: the same hour start, plus minutes and seconds); then
 *     remember(instance, event) when it is a deferral or its queue id is `held` (a dict, or a
 *     function answering `in`); a stamp that names no real time goes to fallback; `remember`
 *     may be the ledger's (hold, defer, forget) instead: then what PostfixParser._remember does
 *     is done here (the key "instance recipient"; hold a deferral without attempt, defer a
 *     deferral, forget the recipient of a delivery or bounce), without its Python call;
 *   - a ": removed" line whose queue id is not held: nothing (the usual case);
 *   - any other line: fallback(start, end, removed) -> None or a sequence of events (the
 *     pure-Python parser's way, with its error handling); what Python read of stamps since is
 *     not known here, so the next stamp is read by time_of again.
 */
#define EVENT_FIELDS 11

typedef struct {
    PyObject_HEAD
    PyTypeObject *event_type;
    Py_ssize_t offset[EVENT_FIELDS];
    PyObject *mta, *suspended, *suspended_reason; /* suspended: the text's prefix (str) */
} Reader;

typedef struct {
    const unsigned char *b;
    PyObject *held, *time_of, *remember, *fallback, *out;
    reuse r;
    int hour_known;           /* time_of's last call read a traditional stamp of this hour: */
    unsigned char hour[8];    /* month, day (1 or 2 digits), hour: "MonD HH" or "MonDD HH" */
    size_t hour_len;
    double hour_start;
    bx_span when_of;          /* the stamp whose time `when` is (len < 0: none) */
    PyObject *when;
} read_state;

static void reader_dealloc(Reader *self) {
    Py_XDECREF(self->event_type);
    Py_XDECREF(self->mta);
    Py_XDECREF(self->suspended);
    Py_XDECREF(self->suspended_reason);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *reader_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *event_type, *fields, *mta, *suspended, *reason;
    static char *names[] = {"event_type", "fields", "mta", "suspended", "suspended_reason", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!UUU", names, &PyType_Type, &event_type,
                                     &PyTuple_Type, &fields, &mta, &suspended, &reason))
        return NULL;
    if (PyTuple_GET_SIZE(fields) != EVENT_FIELDS || !PyUnicode_IS_ASCII(suspended)) {
        PyErr_SetString(PyExc_ValueError, "Reader: 11 fields, and an ASCII prefix");
        return NULL;
    }
    Reader *self = (Reader *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    for (int i = 0; i < EVENT_FIELDS; i++) { /* each a slot holding an object */
        PyObject *descr = PyObject_GetAttr(event_type, PyTuple_GET_ITEM(fields, i));
        int slot = descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type)
                   && ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
        if (slot)
            self->offset[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_XDECREF(descr);
        if (!slot) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "Reader: every field must be a slot");
            Py_DECREF(self);
            return NULL;
        }
    }
    Py_INCREF(event_type);
    self->event_type = (PyTypeObject *)event_type;
    Py_INCREF(mta);
    self->mta = mta;
    Py_INCREF(suspended);
    self->suspended = suspended;
    Py_INCREF(reason);
    self->suspended_reason = reason;
    return (PyObject *)self;
}

/* An event with these fields (references stolen, even on failure). */
static PyObject *new_event(Reader *self, PyObject **values) {
    PyObject *event = self->event_type->tp_alloc(self->event_type, 0);
    for (int i = 0; i < EVENT_FIELDS; i++) {
        if (event == NULL || values[i] == NULL) {
            for (int j = 0; j < EVENT_FIELDS; j++)
                Py_XDECREF(values[j]);
            Py_XDECREF(event);
            return NULL;
        }
    }
    for (int i = 0; i < EVENT_FIELDS; i++)
        *(PyObject **)((char *)event + self->offset[i]) = values[i];
    /* its fields are strings, a float and None: it can hold no cycle, the collector need not
     * look at it (as CPython untracks tuples of such values) */
    if (PyObject_GC_IsTracked(event))
        PyObject_GC_UnTrack(event);
    return event;
}

static int is_held(read_state *st, PyObject *qid) {
    if (PyDict_Check(st->held))
        return PyDict_Contains(st->held, qid);
    PyObject *answer = PyObject_CallOneArg(st->held, qid);
    if (answer == NULL)
        return -1;
    int held = PyObject_IsTrue(answer);
    Py_DECREF(answer);
    return held;
}

/* fallback(start, end, removed): its events appended; the next stamp is read by time_of. */
static int fall_back(read_state *st, const bx_record *rec, int removed) {
    st->hour_known = 0;
    st->when_of = (bx_span){0, -1};
    PyObject *args[3] = {PyLong_FromSsize_t((Py_ssize_t)rec->start),
                         PyLong_FromSsize_t((Py_ssize_t)rec->end), removed ? Py_True : Py_False};
    PyObject *found = NULL;
    if (args[0] != NULL && args[1] != NULL)
        found = PyObject_Vectorcall(st->fallback, args, 3, NULL);
    Py_XDECREF(args[0]);
    Py_XDECREF(args[1]);
    if (found == NULL)
        return -1;
    int status = 0;
    if (found != Py_None) {
        PyObject *items = PySequence_Fast(found, "fallback must give None or events");
        if (items == NULL) {
            status = -1;
        } else {
            for (Py_ssize_t i = 0; status == 0 && i < PySequence_Fast_GET_SIZE(items); i++)
                status = PyList_Append(st->out, PySequence_Fast_ITEMS(items)[i]);
            Py_DECREF(items);
        }
    }
    Py_DECREF(found);
    return status;
}

static int two_digits(const unsigned char *p) { return (p[0] - '0') * 10 + (p[1] - '0'); }

/* The time of a delivery record's stamp (a new reference), Py_None when it names no real time,
 * NULL on an error. */
static PyObject *time_of_record(read_state *st, const bx_record *rec) {
    const unsigned char *b = st->b;
    if (rec->has_when)
        return PyFloat_FromDouble(rec->when);
    int bsd = rec->mon.len == 3 && rec->hms.len == 8 && rec->day.len >= 1 && rec->day.len <= 2;
    unsigned char hour[8];
    size_t hour_len = 0;
    double seconds = 0;
    if (bsd) {
        memcpy(hour, b + rec->mon.off, 3);
        memcpy(hour + 3, b + rec->day.off, (size_t)rec->day.len);
        hour_len = 3 + (size_t)rec->day.len;
        hour[hour_len++] = ' ';
        memcpy(hour + hour_len, b + rec->hms.off, 2);
        hour_len += 2;
        const unsigned char *hms = b + rec->hms.off;
        seconds = two_digits(hms + 3) * 60.0;
        if (st->hour_known && st->hour_len == hour_len && memcmp(st->hour, hour, hour_len) == 0)
            return PyFloat_FromDouble(st->hour_start + seconds + two_digits(hms + 6));
    }
    PyObject *args[4] = {text_of(b, &rec->mon, 0), text_of(b, &rec->day, 0),
                         text_of(b, &rec->hms, 0), text_of(b, &rec->iso, 0)};
    PyObject *when = NULL;
    if (args[0] != NULL && args[1] != NULL && args[2] != NULL && args[3] != NULL)
        when = PyObject_Vectorcall(st->time_of, args, 4, NULL);
    for (int i = 0; i < 4; i++)
        Py_XDECREF(args[i]);
    if (when != NULL && bsd) {
        /* the hour's start: a whole number of seconds (mktime's), as Python adds to it */
        double start = PyFloat_CheckExact(when)
                           ? PyFloat_AS_DOUBLE(when) - two_digits(b + rec->hms.off + 6) - seconds
                           : 0.5;
        st->hour_known = start == (double)(long long)start && start > -9e15 && start < 9e15;
        if (st->hour_known) {
            memcpy(st->hour, hour, hour_len);
            st->hour_len = hour_len;
            st->hour_start = start;
        }
    }
    return when;
}

/* remember(instance, event), or with the ledger's (hold, defer, forget) what
 * PostfixParser._remember does: the key is "instance recipient" (both printable ASCII here). */
static int remember_event(read_state *st, const bx_record *rec, PyObject *instance,
                          PyObject *qid, PyObject *event, PyObject *reason) {
    PyObject *done;
    if (PyTuple_Check(st->remember) && PyTuple_GET_SIZE(st->remember) == 3) {
        Py_ssize_t ni = PyUnicode_GET_LENGTH(instance), nr = rec->rcpt.len < 0 ? 0 : rec->rcpt.len;
        PyObject *key = PyUnicode_New(ni + 1 + nr, 127);
        if (key == NULL)
            return -1;
        Py_UCS1 *k = PyUnicode_1BYTE_DATA(key);
        memcpy(k, PyUnicode_1BYTE_DATA(instance), (size_t)ni);
        k[ni] = ' ';
        if (nr > 0)
            memcpy(k + ni + 1, st->b + rec->rcpt.off, (size_t)nr);
        int which = reason != Py_None ? 0 : rec->status == BX_DEFERRED ? 1 : 2;
        PyObject *args[3] = {qid, key, event};
        done = PyObject_Vectorcall(PyTuple_GET_ITEM(st->remember, which), args,
                                   which == 2 ? 2 : 3, NULL);
        Py_DECREF(key);
    } else {
        PyObject *args[2] = {instance, event};
        done = PyObject_Vectorcall(st->remember, args, 2, NULL);
    }
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

/* A delivery record's event, appended (and remembered when order needs it). */
static int add_delivery(Reader *self, read_state *st, const bx_record *rec) {
    const unsigned char *b = st->b;
    PyObject *when;
    if (st->when_of.len >= 0 && same(b, &st->when_of, &rec->stamp)) {
        when = st->when;
        Py_INCREF(when);
    } else {
        when = time_of_record(st, rec);
        if (when == NULL)
            return -1;
        if (when == Py_None) {
            Py_DECREF(when);
            return fall_back(st, rec, 0);
        }
        Py_XSETREF(st->when, when);
        Py_INCREF(when);
        st->when_of = rec->stamp;
    }
    st->r.rec = rec;
    PyObject *instance = reused(&st->r, &st->r.instance, &st->r.instance_obj, &rec->instance,
                                make_text);
    bx_span empty = {rec->start, 0};
    const bx_span *text = rec->text.len < 0 ? &empty : &rec->text;
    PyObject *reason = Py_None;
    Py_ssize_t n = PyUnicode_GET_LENGTH(self->suspended);
    if (rec->status == BX_DEFERRED && text->len >= n
        && memcmp(b + text->off, PyUnicode_1BYTE_DATA(self->suspended), (size_t)n) == 0)
        reason = self->suspended_reason;
    PyObject *status = STATUS_NAMES[rec->status], *qid = text_of(b, &rec->qid, 0);
    Py_INCREF(self->mta);
    Py_INCREF(status);
    Py_INCREF(reason);
    Py_XINCREF(qid);
    PyObject *values[EVENT_FIELDS] = {
        when, self->mta, qid, text_of(b, &rec->rcpt, 0), lower_cached(b, &rec->domain), status,
        code_of(b, &rec->code), text_of(b, &rec->enhanced, 0), text_of(b, text, 0),
        lower_cached(b, &rec->relay), reason,
    };
    PyObject *event = new_event(self, values);
    int status_ok = event != NULL && instance != NULL ? 0 : -1;
    if (status_ok == 0) {
        int remember = rec->status == BX_DEFERRED ? 1 : is_held(st, qid);
        if (remember < 0) {
            status_ok = -1;
        } else if (remember) {
            status_ok = remember_event(st, rec, instance, qid, event, reason);
        }
    }
    if (status_ok == 0)
        status_ok = PyList_Append(st->out, event);
    Py_XDECREF(event);
    Py_XDECREF(instance);
    Py_XDECREF(qid);
    return status_ok;
}

static int add_removed(read_state *st, const bx_record *rec) {
    if (rec->qid.len < 0)
        return fall_back(st, rec, 1);
    PyObject *qid = text_of(st->b, &rec->qid, 0);
    if (qid == NULL)
        return -1;
    int held = is_held(st, qid);
    Py_DECREF(qid);
    if (held <= 0)
        return held; /* the usual case: nothing deferred is remembered for it */
    return fall_back(st, rec, 1);
}

static PyObject *reader_read(Reader *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "read(block, held, time_of, remember, fallback)");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    bx_scanner scanner;
    if (bx_init(&scanner, view.buf, (size_t)view.len) < 0) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    read_state st = {view.buf, args[1], args[2], args[3], args[4], PyList_New(0),
                     {view.buf, NULL, {0, -1}, {0, -1}, NULL, NULL}, 0, {0}, 0, 0.0, {0, -1},
                     NULL};
    bx_record records[CHUNK];
    size_t n;
    while (st.out != NULL && (n = bx_next(&scanner, records, CHUNK)) > 0) {
        for (size_t i = 0; i < n; i++) {
            const bx_record *rec = &records[i];
            int status = rec->kind == BX_DELIVERY  ? add_delivery(self, &st, rec)
                         : rec->kind == BX_REMOVED ? add_removed(&st, rec)
                                                   : fall_back(&st, rec, 0);
            if (status < 0) {
                Py_CLEAR(st.out);
                break;
            }
        }
    }
    Py_XDECREF(st.r.stamp_obj);
    Py_XDECREF(st.r.instance_obj);
    Py_XDECREF(st.when);
    PyBuffer_Release(&view);
    return st.out;
}

static PyMethodDef reader_methods[] = {
    {"read", (PyCFunction)(void (*)(void))reader_read, METH_FASTCALL,
     "read(block, held, time_of, remember, fallback): the block's events (see the module)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "bounce_exporter_fastscan.Reader",
    .tp_basicsize = sizeof(Reader),
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Reader(event_type, fields, mta, suspended, suspended_reason): see the module.",
    .tp_methods = reader_methods,
    .tp_new = reader_new,
};

static PyObject *count_lines(PyObject *module, PyObject *arg) {
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    size_t n = bx_count_lines(view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromSize_t(n);
}

static PyMethodDef methods[] = {
    {"count_lines", count_lines, METH_O, "data.count(b'\\n'), 16 bytes at a time."},
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
    if (PyType_Ready(&ReaderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (PyModule_AddIntConstant(m, "ABI_VERSION", ABI_VERSION) < 0
                      || PyModule_AddObjectRef(m, "Reader", (PyObject *)&ReaderType) < 0))
        Py_CLEAR(m);
    return m;
}
