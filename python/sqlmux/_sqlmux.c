/*
 * sqlmux._sqlmux: the CPython extension under the sqlmux DB-API driver. It
 * owns the libsqlmux connection (client/sqlmux.h) and the decoding of rows
 * into Python values; the PEP 249 surface (cursors, transactions,
 * exceptions, URLs) is the Python layer's, in __init__.py.
 *
 *   Conn(url, user, password, timeout_ms)  one libsqlmux connection
 *   Conn.execute(sql, params)  -> Result     a statement, streamed
 *   Conn.command(line)         -> Result     a dot-command
 *   Result.fetchone() / fetchmany(n) / iteration, columns, changes, last_id
 *
 * Streaming. A Result holds the one row libsqlmux is on, so iterating over
 * any number of rows needs the memory of one row. A connection carries one
 * stream at a time: a request sent while a Result is still streaming first
 * reads that Result's remaining rows into the Result's own list (so
 * interleaved cursors keep working, at the memory of the rows they left).
 *
 * Errors. Every failure is raised as the exception that the Python layer's
 * hook error_factory(code, message) returns, so the -ERR code to exception
 * class mapping lives in one place. The driver's own codes: RANGE (an int
 * parameter outside int64), TYPE (a parameter of an unsupported type),
 * CLOSED (the connection was closed), INUSE (another thread is using the
 * connection).
 *
 * Threads. The GIL is released while libsqlmux blocks. A connection is used
 * by one thread at a time (threadsafety 1); a second thread calling into a
 * busy connection gets INUSE instead of corrupting it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "client/sqlmux.h"
#include "proto/buf.h"
#include "proto/codec.h"

/* Row converters: what a column's text field becomes. A column may also
 * have a Python callable (dates, Decimal), applied to the field's str. */
enum conv_kind {
    CONV_AUTO = 0,  /* int or float when the text is one, else str */
    CONV_INT = 1,   /* int when it is one, else as AUTO */
    CONV_FLOAT = 2, /* float when it parses (NaN, Infinity too), else AUTO */
    CONV_TEXT = 3,  /* always str */
    CONV_BOOL = 4,  /* PostgreSQL t/f */
};

/* Hooks set once by the Python layer (set_hooks). */
static PyObject *error_factory;  /* (code, message) -> exception instance */
static PyObject *param_adapter;  /* (value, kind) -> None/int/float/str/bytes */
static PyObject *converters_for; /* (types tuple, kind) -> tuple of int or callable */

typedef struct result_object result_object;

typedef struct {
    PyObject_HEAD sqlmux_conn *conn; /* NULL once closed */
    result_object *stream;           /* the Result streaming now, borrowed */
    PyObject *kind;                  /* backend kind: "sqlite" or "postgresql" */
    int busy;                        /* a thread is inside libsqlmux */
} conn_object;

/* A column's converter: an enum conv_kind, or CONV_CALL for convs[i]. */
#define CONV_CALL (-1)

struct result_object {
    PyObject_HEAD conn_object *owner; /* strong ref while the stream is open */
    sqlmux_result *res;               /* NULL once finished */
    PyObject *columns;                /* tuple of (name, type) */
    PyObject *convs;                  /* tuple: int kind or callable per column */
    int *kinds;                       /* per column: enum conv_kind or CONV_CALL */
    PyObject *rows;                   /* list of rows read ahead, or NULL */
    Py_ssize_t rowpos;                /* next row of rows */
    int ncols;
    int done;         /* the result ended (success; an error is raised) */
    int64_t changes;  /* -1 until known */
    int64_t last_id;  /* 0 when none */
    int64_t nrows;    /* rows stepped over */
    bool has_changes; /* the status line had changes= */
};

static PyTypeObject conn_type;
static PyTypeObject result_type;

/* Raise the exception error_factory makes for code and message. Returns
 * NULL for `return raise_error(...)`. */
static PyObject *raise_error(const char *code, const char *msg)
{
    if (error_factory == NULL) {
        PyErr_Format(PyExc_RuntimeError, "%s %s", code, msg);
        return NULL;
    }
    PyObject *exc = PyObject_CallFunction(error_factory, "ss", code, msg);
    if (exc == NULL)
        return NULL;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

static PyObject *raise_result(sqlmux_result *r)
{
    const char *code = sqlmux_errcode(r);
    return raise_error(code != NULL ? code : "INTERNAL", sqlmux_errmsg(r));
}

/* ---- Decoding fields -------------------------------------------------- */

/* The text of an integer as the daemon writes one: -?(0|[1-9][0-9]*). */
static bool is_int_text(const char *s, size_t n)
{
    size_t i = s[0] == '-' ? 1 : 0;
    if (i == n || n - i > 20)
        return false;
    if (s[i] == '0' && n - i > 1)
        return false;
    for (; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return !(s[0] == '-' && s[1] == '0');
}

/* The float of s, or NULL (no exception) when s is not one. Unless
 * any_form, only the text the daemon writes for a real (codec_put_real:
 * "1.0", "0.1", "1e+300", "inf") counts, so a text such as "1.10" or
 * "1e3" in a column without a declared type stays a str. */
static PyObject *float_or_null(const char *s, size_t n, bool any_form)
{
    if (n == 0 || s[0] == ' ' || (!any_form && strpbrk(s, ".ei") == NULL))
        return NULL;
    char *end = NULL;
    double d = PyOS_string_to_double(s, &end, NULL);
    if (d == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return NULL;
    }
    if (end != s + n)
        return NULL;
    if (!any_form) {
        struct buf canon = BUF_INIT;
        bool same = codec_put_real(&canon, d) == 0 && canon.len == n && memcmp(canon.data, s, n) == 0;
        buf_free(&canon);
        if (!same)
            return NULL;
    }
    return PyFloat_FromDouble(d);
}

static PyObject *decode_text(const char *s, size_t n)
{
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)n, "strict");
}

static PyObject *decode_auto(const char *s, size_t n, bool any_float)
{
    if (n > 0 && is_int_text(s, n)) {
        if (n > 18) /* may not fit a long long: let Python parse it */
            return PyLong_FromString(s, NULL, 10);
        long long v = 0;
        for (size_t i = s[0] == '-'; i < n; i++)
            v = v * 10 + (s[i] - '0');
        return PyLong_FromLongLong(s[0] == '-' ? -v : v);
    }
    PyObject *f = n > 0 ? float_or_null(s, n, any_float) : NULL;
    return f != NULL ? f : decode_text(s, n);
}

/* Field col of the current row, converted by kind (CONV_CALL: the
 * callable conv). New reference. */
static PyObject *decode_field(sqlmux_result *r, int col, int kind, PyObject *conv)
{
    enum sqlmux_type t = sqlmux_type(r, col);
    if (t == SQLMUX_NULL)
        Py_RETURN_NONE;
    const char *s = sqlmux_text(r, col);
    size_t n = sqlmux_len(r, col);
    if (t == SQLMUX_BLOB)
        return PyBytes_FromStringAndSize(s, (Py_ssize_t)n);
    if (kind == CONV_CALL) {
        PyObject *str = decode_text(s, n);
        if (str == NULL)
            return NULL;
        PyObject *v = PyObject_CallOneArg(conv, str);
        Py_DECREF(str);
        return v;
    }
    switch ((enum conv_kind)kind) {
    case CONV_TEXT: return decode_text(s, n);
    case CONV_FLOAT: return decode_auto(s, n, true);
    case CONV_BOOL:
        if (n == 1 && (s[0] == 't' || s[0] == 'f'))
            return PyBool_FromLong(s[0] == 't');
        return decode_text(s, n);
    case CONV_INT:
    case CONV_AUTO:
    default: return decode_auto(s, n, false);
    }
}

static PyObject *decode_row(result_object *self)
{
    PyObject *row = PyTuple_New(self->ncols);
    if (row == NULL)
        return NULL;
    for (int i = 0; i < self->ncols; i++) {
        PyObject *v = decode_field(self->res, i, self->kinds[i], PyTuple_GET_ITEM(self->convs, i));
        if (v == NULL) {
            Py_DECREF(row);
            return NULL;
        }
        PyTuple_SET_ITEM(row, i, v);
    }
    return row;
}

/* ---- Results ---------------------------------------------------------- */

/* Record the facts of a finished result and release it (and the
 * connection's stream slot). */
static void result_finish(result_object *self)
{
    if (self->res != NULL) {
        self->has_changes = sqlmux_fact(self->res, "changes") != NULL;
        self->changes = sqlmux_changes(self->res);
        self->last_id = sqlmux_last_id(self->res);
        sqlmux_free(self->res);
        self->res = NULL;
    }
    self->done = 1;
    if (self->owner != NULL) {
        if (self->owner->stream == self)
            self->owner->stream = NULL;
        Py_CLEAR(self->owner);
    }
}

/* Step the stream once: 1 and *row set for a row, 0 at the end, -1 with an
 * exception. The connection must not be busy (checked by callers). */
static int result_step(result_object *self, PyObject **row)
{
    *row = NULL;
    if (self->res == NULL)
        return 0;
    int rc;
    if (sqlmux_step_ready(self->res)) {
        /* The row is received already: no wait, so no GIL round trip. */
        rc = sqlmux_step(self->res);
    } else {
        if (self->owner != NULL)
            self->owner->busy = 1;
        Py_BEGIN_ALLOW_THREADS rc = sqlmux_step(self->res);
        Py_END_ALLOW_THREADS if (self->owner != NULL) self->owner->busy = 0;
    }
    if (rc == SQLMUX_ROW) {
        self->nrows++;
        *row = decode_row(self);
        return *row != NULL ? 1 : -1;
    }
    if (rc == SQLMUX_DONE) {
        result_finish(self);
        return 0;
    }
    raise_result(self->res);
    result_finish(self);
    return -1;
}

/* Read the rest of the stream into self->rows, so the connection is free
 * for another request. 0, or -1 with an exception (the rows read so far
 * stay). */
static int result_drain(result_object *self)
{
    if (self->rows == NULL && (self->rows = PyList_New(0)) == NULL)
        return -1;
    for (;;) {
        PyObject *row;
        int rc = result_step(self, &row);
        if (rc <= 0)
            return rc;
        int added = PyList_Append(self->rows, row);
        Py_DECREF(row);
        if (added < 0)
            return -1;
    }
}

/* The next row: a new tuple, NULL at the end (no exception) or with an
 * exception. */
static PyObject *result_next_row(result_object *self)
{
    if (self->rows != NULL) {
        if (self->rowpos < PyList_GET_SIZE(self->rows)) {
            PyObject *row = PyList_GET_ITEM(self->rows, self->rowpos);
            PyList_SET_ITEM(self->rows, self->rowpos, Py_NewRef(Py_None));
            self->rowpos++;
            return row;
        }
        Py_CLEAR(self->rows);
        self->rowpos = 0;
    }
    if (self->owner != NULL && self->owner->busy) {
        raise_error("INUSE", "the connection is in use by another thread");
        return NULL;
    }
    PyObject *row;
    result_step(self, &row);
    return row;
}

static PyObject *result_iternext(PyObject *op)
{
    return result_next_row((result_object *)op);
}

static PyObject *result_fetchone(PyObject *op, PyObject *unused)
{
    (void)unused;
    PyObject *row = result_next_row((result_object *)op);
    if (row == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return row;
}

static PyObject *result_fetchmany(PyObject *op, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; n < 0 || i < n; i++) {
        PyObject *row = result_next_row((result_object *)op);
        if (row == NULL)
            break;
        int added = PyList_Append(list, row);
        Py_DECREF(row);
        if (added < 0)
            break;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(list);
        return NULL;
    }
    return list;
}

/* Stop reading: the rest of the rows are skipped (libsqlmux reads and
 * drops them with the connection's next request). */
static PyObject *result_close(PyObject *op, PyObject *unused)
{
    (void)unused;
    result_object *self = (result_object *)op;
    Py_CLEAR(self->rows);
    result_finish(self);
    Py_RETURN_NONE;
}

static void result_dealloc(PyObject *op)
{
    result_object *self = (result_object *)op;
    PyObject *r = result_close(op, NULL);
    Py_XDECREF(r);
    Py_XDECREF(self->columns);
    Py_XDECREF(self->convs);
    PyMem_Free(self->kinds);
    Py_TYPE(op)->tp_free(op);
}

static PyObject *result_get_changes(PyObject *op, void *unused)
{
    (void)unused;
    result_object *self = (result_object *)op;
    if (!self->done || !self->has_changes)
        return PyLong_FromLong(-1);
    return PyLong_FromLongLong(self->changes);
}

static PyObject *result_get_last_id(PyObject *op, void *unused)
{
    (void)unused;
    result_object *self = (result_object *)op;
    if (!self->done || self->last_id == 0)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(self->last_id);
}

static PyObject *result_get_columns(PyObject *op, void *unused)
{
    (void)unused;
    return Py_NewRef(((result_object *)op)->columns);
}

static PyObject *result_get_done(PyObject *op, void *unused)
{
    (void)unused;
    result_object *self = (result_object *)op;
    return PyBool_FromLong(self->done && (self->rows == NULL || self->rowpos >= PyList_GET_SIZE(self->rows)));
}

static PyMethodDef result_methods[] = {
    {"fetchone", result_fetchone, METH_NOARGS, "The next row as a tuple, or None."},
    {"fetchmany", result_fetchmany, METH_O, "Up to n rows as a list (n < 0: all)."},
    {"close", result_close, METH_NOARGS, "Stop reading; the rest of the rows are skipped."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef result_getset[] = {
    {"columns", result_get_columns, NULL, "((name, declared type), ...)", NULL},
    {"changes", result_get_changes, NULL, "rows changed, -1 when not reported", NULL},
    {"last_id", result_get_last_id, NULL, "rowid of the last inserted row, or None", NULL},
    {"done", result_get_done, NULL, "every row has been read", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject result_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sqlmux._sqlmux.Result",
    .tp_basicsize = sizeof(result_object),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The result of one request, streamed row by row.",
    .tp_dealloc = result_dealloc,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = result_iternext,
    .tp_methods = result_methods,
    .tp_getset = result_getset,
};

/* Wrap r (taken over) for conn: columns and converters, then the first
 * step, so an error is raised by the call that sent the statement. */
static PyObject *result_new(conn_object *conn, sqlmux_result *r, bool streaming)
{
    result_object *self = PyObject_New(result_object, &result_type);
    if (self == NULL) {
        sqlmux_free(r);
        return NULL;
    }
    self->owner = NULL;
    self->res = r;
    self->columns = NULL;
    self->convs = NULL;
    self->kinds = NULL;
    self->rows = NULL;
    self->rowpos = 0;
    self->done = 0;
    self->changes = -1;
    self->last_id = 0;
    self->nrows = 0;
    self->has_changes = false;
    self->ncols = sqlmux_ncols(r);
    if (streaming) {
        self->owner = (conn_object *)Py_NewRef((PyObject *)conn);
        conn->stream = self;
    }
    PyObject *types = PyTuple_New(self->ncols);
    self->columns = PyTuple_New(self->ncols);
    if (types == NULL || self->columns == NULL)
        goto fail;
    for (int i = 0; i < self->ncols; i++) {
        PyObject *col = Py_BuildValue("(ss)", sqlmux_colname(r, i), sqlmux_coltype(r, i));
        if (col == NULL)
            goto fail;
        PyTuple_SET_ITEM(types, i, Py_NewRef(PyTuple_GET_ITEM(col, 1)));
        PyTuple_SET_ITEM(self->columns, i, col);
    }
    if (converters_for != NULL && self->ncols > 0)
        self->convs = PyObject_CallFunctionObjArgs(converters_for, types, conn->kind, NULL);
    else
        self->convs = PyTuple_New(0);
    if (self->convs == NULL)
        goto fail;
    if (!PyTuple_Check(self->convs) || PyTuple_GET_SIZE(self->convs) != self->ncols) {
        PyErr_SetString(PyExc_TypeError, "converters_for must return one converter per column");
        goto fail;
    }
    Py_CLEAR(types);
    self->kinds = PyMem_Calloc((size_t)self->ncols + 1, sizeof *self->kinds);
    if (self->kinds == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (int i = 0; i < self->ncols; i++) {
        PyObject *conv = PyTuple_GET_ITEM(self->convs, i);
        self->kinds[i] = PyLong_Check(conv) ? (int)PyLong_AsLong(conv) : CONV_CALL;
    }
    /* The first step: a row is kept as the first of self->rows. */
    PyObject *row;
    int rc = result_step(self, &row);
    if (rc < 0)
        goto fail;
    if (rc == 1) {
        self->rows = PyList_New(1);
        if (self->rows == NULL) {
            Py_DECREF(row);
            goto fail;
        }
        PyList_SET_ITEM(self->rows, 0, row);
    }
    if (!streaming && rc == 1 && result_drain(self) < 0)
        goto fail;
    return (PyObject *)self;
fail:
    Py_XDECREF(types);
    Py_DECREF(self);
    return NULL;
}

/* ---- Connections ------------------------------------------------------ */

/* Make the connection ready for a new request: open, not in use, its open
 * stream (if any) read into that Result. 0, or -1 with an exception. */
static int conn_ready(conn_object *self)
{
    if (self->conn == NULL) {
        raise_error("CLOSED", "the connection is closed");
        return -1;
    }
    if (self->busy) {
        raise_error("INUSE", "the connection is in use by another thread");
        return -1;
    }
    if (self->stream != NULL) {
        result_object *s = self->stream;
        Py_INCREF(s);
        int rc = result_drain(s);
        Py_DECREF(s);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int conn_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    conn_object *self = (conn_object *)op;
    static char *kwlist[] = {"url", "user", "password", "timeout_ms", NULL};
    const char *url = NULL, *user = NULL, *password = NULL;
    int timeout_ms = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "z|zzi", kwlist, &url, &user, &password, &timeout_ms))
        return -1;
    if (self->conn != NULL) {
        PyErr_SetString(PyExc_TypeError, "Conn.__init__ called twice");
        return -1;
    }
    char *err = NULL;
    sqlmux_conn *c;
    Py_BEGIN_ALLOW_THREADS c = sqlmux_connect_auth(url, user, password, timeout_ms, &err);
    Py_END_ALLOW_THREADS if (c == NULL)
    {
        raise_error("CONNECTION", err != NULL ? err : "out of memory");
        free(err);
        return -1;
    }
    self->conn = c;
    return 0;
}

static PyObject *conn_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    conn_object *self = (conn_object *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->conn = NULL;
    self->stream = NULL;
    self->kind = PyUnicode_FromString("sqlite");
    self->busy = 0;
    if (self->kind == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *conn_close(PyObject *op, PyObject *unused)
{
    (void)unused;
    conn_object *self = (conn_object *)op;
    if (self->busy)
        return raise_error("INUSE", "the connection is in use by another thread");
    if (self->stream != NULL) {
        result_object *s = self->stream;
        self->stream = NULL;
        PyObject *r = result_close((PyObject *)s, NULL);
        Py_XDECREF(r);
    }
    if (self->conn != NULL) {
        sqlmux_close(self->conn);
        self->conn = NULL;
    }
    Py_RETURN_NONE;
}

static void conn_dealloc(PyObject *op)
{
    conn_object *self = (conn_object *)op;
    /* A streaming Result holds a reference, so none is open here. */
    if (self->conn != NULL)
        sqlmux_close(self->conn);
    Py_XDECREF(self->kind);
    Py_TYPE(op)->tp_free(op);
}

/* Parameters as libsqlmux values. Python objects whose bytes the values
 * point at stay referenced by `keep` (and buffers by `views`) until the
 * request is encoded. */
struct params {
    sqlmux_value *v;
    Py_buffer *views;
    Py_ssize_t n, nviews;
    PyObject *keep;
};

static void params_release(struct params *p)
{
    for (Py_ssize_t i = 0; i < p->nviews; i++)
        PyBuffer_Release(&p->views[i]);
    PyMem_Free(p->v);
    PyMem_Free(p->views);
    Py_XDECREF(p->keep);
}

static int param_set(struct params *p, Py_ssize_t i, PyObject *o, bool pg, bool adapted)
{
    sqlmux_value *v = &p->v[i];
    if (o == Py_None) {
        *v = sqlmux_val_null();
    } else if (PyBool_Check(o)) {
        /* PostgreSQL: untyped 't'/'f' so a boolean column takes it. */
        *v = pg ? sqlmux_val_textn(o == Py_True ? "t" : "f", 1) : sqlmux_val_int(o == Py_True);
    } else if (PyLong_Check(o)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (x == -1 && PyErr_Occurred())
            return -1;
        if (overflow) {
            raise_error("RANGE", "integer parameter outside the 64-bit range");
            return -1;
        }
        *v = sqlmux_val_int(x);
    } else if (PyFloat_Check(o)) {
        double d = PyFloat_AS_DOUBLE(o);
        /* The protocol refuses NaN as a real: it travels as the text NaN,
         * which PostgreSQL reads as a float and a SQLite REAL column keeps. */
        *v = d != d ? sqlmux_val_textn("NaN", 3) : sqlmux_val_double(d);
    } else if (PyUnicode_Check(o)) {
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(o, &len);
        if (s == NULL)
            return -1;
        *v = sqlmux_val_textn(s, (size_t)len);
    } else if (PyObject_CheckBuffer(o)) {
        Py_buffer *view = &p->views[p->nviews];
        if (PyObject_GetBuffer(o, view, PyBUF_CONTIG_RO) < 0)
            return -1;
        p->nviews++;
        *v = sqlmux_val_blob(view->buf, (size_t)view->len);
    } else if (!adapted && param_adapter != NULL) {
        PyObject *a = PyObject_CallFunctionObjArgs(param_adapter, o, NULL);
        if (a == NULL)
            return -1;
        int rc = PyList_Append(p->keep, a);
        Py_DECREF(a);
        return rc < 0 ? -1 : param_set(p, i, a, pg, true);
    } else {
        PyObject *name = PyObject_GetAttrString((PyObject *)Py_TYPE(o), "__name__");
        const char *tn = name != NULL ? PyUnicode_AsUTF8(name) : NULL;
        char msg[200];
        snprintf(msg, sizeof msg, "parameter %zd: unsupported type %s", i + 1, tn != NULL ? tn : "?");
        PyErr_Clear();
        Py_XDECREF(name);
        raise_error("TYPE", msg);
        return -1;
    }
    return 0;
}

/* Fill p from the sequence seq (None: no parameters). */
static int params_build(struct params *p, PyObject *seq, bool pg)
{
    memset(p, 0, sizeof *p);
    if (seq == Py_None)
        return 0;
    PyObject *fast = PySequence_Fast(seq, "parameters must be a sequence");
    if (fast == NULL)
        return -1;
    p->keep = PyList_New(0);
    if (p->keep == NULL || PyList_Append(p->keep, fast) < 0) {
        Py_DECREF(fast);
        return -1;
    }
    Py_DECREF(fast);
    p->n = PySequence_Fast_GET_SIZE(fast);
    if (p->n == 0)
        return 0;
    p->v = PyMem_Calloc((size_t)p->n, sizeof *p->v);
    p->views = PyMem_Calloc((size_t)p->n, sizeof *p->views);
    if (p->v == NULL || p->views == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < p->n; i++)
        if (param_set(p, i, PySequence_Fast_GET_ITEM(fast, i), pg, false) < 0)
            return -1;
    return 0;
}

static PyObject *conn_execute(PyObject *op, PyObject *args)
{
    conn_object *self = (conn_object *)op;
    const char *sql;
    Py_ssize_t len;
    PyObject *seq = Py_None;
    if (!PyArg_ParseTuple(args, "s#|O", &sql, &len, &seq))
        return NULL;
    if (conn_ready(self) < 0)
        return NULL;
    struct params p;
    bool pg = PyUnicode_CompareWithASCIIString(self->kind, "postgresql") == 0;
    if (params_build(&p, seq, pg) < 0) {
        params_release(&p);
        return NULL;
    }
    sqlmux_result *r;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS r = sqlmux_queryn(self->conn, sql, (size_t)len, p.v, (size_t)p.n);
    Py_END_ALLOW_THREADS self->busy = 0;
    params_release(&p);
    return result_new(self, r, true);
}

static PyObject *conn_command(PyObject *op, PyObject *arg)
{
    conn_object *self = (conn_object *)op;
    const char *line = PyUnicode_AsUTF8(arg);
    if (line == NULL || conn_ready(self) < 0)
        return NULL;
    sqlmux_result *r;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS r = sqlmux_command(self->conn, line);
    Py_END_ALLOW_THREADS self->busy = 0;
    return result_new(self, r, false);
}

static PyObject *conn_get_closed(PyObject *op, void *unused)
{
    (void)unused;
    conn_object *self = (conn_object *)op;
    return PyBool_FromLong(self->conn == NULL || sqlmux_conn_errmsg(self->conn) != NULL);
}

static PyObject *conn_get_kind(PyObject *op, void *unused)
{
    (void)unused;
    return Py_NewRef(((conn_object *)op)->kind);
}

static int conn_set_kind(PyObject *op, PyObject *value, void *unused)
{
    (void)unused;
    if (value == NULL || !PyUnicode_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "kind must be a str");
        return -1;
    }
    Py_SETREF(((conn_object *)op)->kind, Py_NewRef(value));
    return 0;
}

static PyObject *conn_get_url(PyObject *op, void *unused)
{
    (void)unused;
    conn_object *self = (conn_object *)op;
    if (self->conn == NULL)
        Py_RETURN_NONE;
    return PyUnicode_FromString(sqlmux_conn_url(self->conn));
}

static PyObject *conn_get_tls(PyObject *op, void *unused)
{
    (void)unused;
    conn_object *self = (conn_object *)op;
    const char *tls = self->conn != NULL ? sqlmux_conn_tls(self->conn) : NULL;
    if (tls == NULL)
        Py_RETURN_NONE;
    return PyUnicode_FromString(tls);
}

static PyObject *conn_set_timeout(PyObject *op, PyObject *arg)
{
    conn_object *self = (conn_object *)op;
    long ms = PyLong_AsLong(arg);
    if (ms == -1 && PyErr_Occurred())
        return NULL;
    if (self->conn != NULL)
        sqlmux_set_timeout(self->conn, ms > INT32_MAX ? INT32_MAX : (int)ms);
    Py_RETURN_NONE;
}

static PyMethodDef conn_methods[] = {
    {"execute", conn_execute, METH_VARARGS, "execute(sql, params=None) -> Result, streaming"},
    {"command", conn_command, METH_O, "command(line) -> Result, read whole"},
    {"close", conn_close, METH_NOARGS, "Close the connection."},
    {"set_timeout", conn_set_timeout, METH_O, "Milliseconds for every later wait (0: none)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef conn_getset[] = {
    {"closed", conn_get_closed, NULL, "closed or broken", NULL},
    {"kind", conn_get_kind, conn_set_kind, "backend kind used to decode rows", NULL},
    {"url", conn_get_url, NULL, "the URL, password shown as ***", NULL},
    {"tls", conn_get_tls, NULL, "TLS protocol and cipher, None on plain text", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject conn_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sqlmux._sqlmux.Conn",
    .tp_basicsize = sizeof(conn_object),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Conn(url, user=None, password=None, timeout_ms=0): one libsqlmux connection.",
    .tp_new = conn_new,
    .tp_init = conn_init,
    .tp_dealloc = conn_dealloc,
    .tp_methods = conn_methods,
    .tp_getset = conn_getset,
};

/* ---- Module ----------------------------------------------------------- */

static PyObject *set_hooks(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *ef, *pa, *cf;
    if (!PyArg_ParseTuple(args, "OOO", &ef, &pa, &cf))
        return NULL;
    Py_XSETREF(error_factory, Py_NewRef(ef));
    Py_XSETREF(param_adapter, Py_NewRef(pa));
    Py_XSETREF(converters_for, Py_NewRef(cf));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_hooks", set_hooks, METH_VARARGS, "set_hooks(error_factory, param_adapter, converters_for)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sqlmux._sqlmux",
    .m_doc = "The C core of the sqlmux DB-API driver, over libsqlmux.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__sqlmux(void);

PyMODINIT_FUNC PyInit__sqlmux(void)
{
    if (PyType_Ready(&conn_type) < 0 || PyType_Ready(&result_type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Conn", (PyObject *)&conn_type) < 0 ||
        PyModule_AddObjectRef(m, "Result", (PyObject *)&result_type) < 0 ||
        PyModule_AddIntConstant(m, "CONV_AUTO", CONV_AUTO) < 0 ||
        PyModule_AddIntConstant(m, "CONV_INT", CONV_INT) < 0 ||
        PyModule_AddIntConstant(m, "CONV_FLOAT", CONV_FLOAT) < 0 ||
        PyModule_AddIntConstant(m, "CONV_TEXT", CONV_TEXT) < 0 ||
        PyModule_AddIntConstant(m, "CONV_BOOL", CONV_BOOL) < 0 ||
        PyModule_AddStringConstant(m, "libsqlmux_version", SQLMUX_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
