/* _colenc: rows (tuples) -> Arrow column buffers, for the Parquet sink.
 *
 *     encode(rows, kinds) -> list, one entry per column
 *
 * kinds[j] is the kind of field j of every row:
 *     T  int nanoseconds      -> int64 microseconds (C division: truncation, as Arrow's unsafe cast)
 *     s  str                  -> utf8 (int32 offsets + data)
 *     i  int                  -> int32
 *     l  int                  -> int64
 *     d  float (or int)       -> float64
 *     L  list/tuple of str    -> list<utf8> (int32 offsets + a child utf8 array)
 * Any cell may be None (null); so may an item of an L list.
 *
 * Each column comes back as a tuple (buffers are bytearrays sized exactly, no copy):
 *     T i l d:  (null_count, validity, data)
 *     s:        (null_count, validity, offsets, data)
 *     L:        (null_count, validity, offsets, (child_len, child_null_count, child_validity,
 *                                                child_offsets, child_data))
 * validity is None when the column has no nulls, else an LSB bitmap (bits past the length are 0).
 * pa.Array.from_buffers(type, len(rows), [validity, *buffers], null_count) gives what
 * pa.array(column, type) gives.
 *
 * Errors are exceptions naming the column and row, never a cell's content (cells hold audited
 * text): TypeError (wrong type), OverflowError (int out of range, more than 2**31-1 string bytes
 * or list items in a column), UnicodeError (a str with a lone surrogate).
 *
 * No Python code runs while the rows are read (no callbacks, no GC-tracked allocation), so the
 * cells borrowed from the row tuples stay alive.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Growable buffer backed by a bytearray (handed to Arrow as it is)          */
/* ------------------------------------------------------------------------ */

typedef struct {
    PyObject *obj; /* bytearray, NULL until created */
    char *p;
    Py_ssize_t len, cap;
} Buf;

static int buf_init(Buf *b, Py_ssize_t cap)
{
    b->obj = PyByteArray_FromStringAndSize(NULL, cap);
    if (b->obj == NULL)
        return -1;
    b->p = PyByteArray_AS_STRING(b->obj);
    b->len = 0;
    b->cap = cap;
    return 0;
}

static int buf_grow(Buf *b, Py_ssize_t need)
{
    Py_ssize_t want, cap;
    if (need > PY_SSIZE_T_MAX - b->len) {
        PyErr_NoMemory();
        return -1;
    }
    want = b->len + need;
    cap = b->cap > PY_SSIZE_T_MAX / 2 ? PY_SSIZE_T_MAX : b->cap * 2;
    if (cap < want)
        cap = want;
    if (cap < 64)
        cap = 64;
    if (PyByteArray_Resize(b->obj, cap) < 0)
        return -1;
    b->p = PyByteArray_AS_STRING(b->obj);
    b->cap = cap;
    return 0;
}

static inline int buf_reserve(Buf *b, Py_ssize_t need)
{
    return b->cap - b->len >= need ? 0 : buf_grow(b, need);
}

/* Shrink to the bytes written (in place unless far too big). */
static int buf_finish(Buf *b)
{
    if (b->obj == NULL || b->cap == b->len)
        return 0;
    if (PyByteArray_Resize(b->obj, b->len) < 0)
        return -1;
    b->p = PyByteArray_AS_STRING(b->obj);
    b->cap = b->len;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Columns                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct {
    char kind;
    Py_ssize_t nulls;
    Buf valid;   /* n bits; created at the first null */
    Buf data;    /* T l d: 8 bytes a row; i: 4; s: utf8 bytes; L: child utf8 bytes */
    Buf offs;    /* s L: n + 1 int32 */
    Buf coffs;   /* L: child offsets, clen + 1 int32 */
    Buf cnull;   /* L: indices (Py_ssize_t) of null items; created at the first one */
    Py_ssize_t clen, cnulls;
} Col;

static void col_clear(Col *c)
{
    Py_CLEAR(c->valid.obj);
    Py_CLEAR(c->data.obj);
    Py_CLEAR(c->offs.obj);
    Py_CLEAR(c->coffs.obj);
    Py_CLEAR(c->cnull.obj);
}

/* An all-valid bitmap of n bits (padding bits 0). */
static int bitmap_new(Buf *b, Py_ssize_t n)
{
    Py_ssize_t size = (n + 7) / 8;
    if (buf_init(b, size) < 0)
        return -1;
    b->len = size;
    memset(b->p, 0xFF, (size_t)size);
    if (n % 8)
        b->p[size - 1] = (char)((1u << (n % 8)) - 1);
    return 0;
}

static inline void bit_clear(Buf *b, Py_ssize_t i)
{
    b->p[i >> 3] &= (char)~(1u << (i & 7));
}

static int set_null(Col *c, Py_ssize_t i, Py_ssize_t n)
{
    if (c->valid.obj == NULL && bitmap_new(&c->valid, n) < 0)
        return -1;
    bit_clear(&c->valid, i);
    c->nulls++;
    return 0;
}

/* Error helpers: column and row, the type's name at most; never the value. */
static void type_error(Py_ssize_t j, Py_ssize_t i, const char *want, PyObject *v)
{
    PyErr_Format(PyExc_TypeError, "column %zd, row %zd: expected %s or None, got %.100s", j, i, want,
                 Py_TYPE(v)->tp_name);
}

static void overflow(Py_ssize_t j, Py_ssize_t i, const char *what)
{
    PyErr_Format(PyExc_OverflowError, "column %zd, row %zd: %s", j, i, what);
}

/* UTF-8 of a str (cached by CPython; the str's own data when it is ASCII). NULL: error set, with
 * any UnicodeEncodeError (it holds the whole string in .object) replaced by one without it. */
static inline const char *utf8(PyObject *v, Py_ssize_t *size, Py_ssize_t j, Py_ssize_t i)
{
    const char *s;
    if (PyUnicode_IS_COMPACT_ASCII(v)) {
        *size = PyUnicode_GET_LENGTH(v);
        return (const char *)PyUnicode_DATA(v);
    }
    s = PyUnicode_AsUTF8AndSize(v, size);
    if (s == NULL && PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        PyErr_Clear();
        PyErr_Format(PyExc_UnicodeError, "column %zd, row %zd: str cannot be encoded as UTF-8 (lone surrogate)",
                     j, i);
    }
    return s;
}

/* Append a str's UTF-8 to data (limit: int32 offsets). */
static inline int append_str(Buf *data, PyObject *v, Py_ssize_t j, Py_ssize_t i)
{
    Py_ssize_t size;
    const char *s = utf8(v, &size, j, i);
    if (s == NULL)
        return -1;
    if (size > INT32_MAX - data->len) {
        overflow(j, i, "more than 2**31-1 bytes of strings in the column");
        return -1;
    }
    if (buf_reserve(data, size) < 0)
        return -1;
    memcpy(data->p + data->len, s, (size_t)size);
    data->len += size;
    return 0;
}

#define SAMPLE_ROWS 1024

/* After the first `done` rows: make room for n rows like them (+1/8), capped by int32 offsets. */
static int presize(Buf *b, Py_ssize_t done, Py_ssize_t n)
{
    double want = (double)b->len / (double)done * (double)n * 1.125 + 64.0;
    if (want > (double)INT32_MAX + 64.0)
        want = (double)INT32_MAX + 64.0;
    return (Py_ssize_t)want > b->cap ? buf_reserve(b, (Py_ssize_t)want - b->len) : 0;
}

static int col_init(Col *c, char kind, Py_ssize_t n)
{
    c->kind = kind;
    switch (kind) {
    case 'T':
    case 'l':
    case 'd':
        if (buf_init(&c->data, n * 8) < 0)
            return -1;
        c->data.len = n * 8;
        return 0;
    case 'i':
        if (buf_init(&c->data, n * 4) < 0)
            return -1;
        c->data.len = n * 4;
        return 0;
    case 's':
    case 'L':
        if (buf_init(&c->offs, (n + 1) * 4) < 0)
            return -1;
        c->offs.len = (n + 1) * 4;
        ((int32_t *)c->offs.p)[0] = 0;
        /* Sized for the first SAMPLE_ROWS rows, then for all from what they held (presize), and
         * grown geometrically past that. */
        if (buf_init(&c->data, (n < SAMPLE_ROWS ? n : SAMPLE_ROWS) * 16 + 64) < 0)
            return -1;
        if (kind == 'L') {
            if (buf_init(&c->coffs, (n < SAMPLE_ROWS ? n : SAMPLE_ROWS) * 8 + 64) < 0)
                return -1;
            c->coffs.len = 4;
            ((int32_t *)c->coffs.p)[0] = 0;
        }
        return 0;
    default: /* checked by encode */
        PyErr_SetString(PyExc_SystemError, "_colenc: unknown column kind");
        return -1;
    }
}

/* An int's value; *ov set when it does not fit a long long. Small ints (most cells) are read
 * in place, as Cython does, instead of through the call. */
static inline long long int_value(PyObject *v, int *ov)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (PyUnstable_Long_IsCompact((PyLongObject *)v)) {
        *ov = 0;
        return (long long)PyUnstable_Long_CompactValue((PyLongObject *)v);
    }
#else
    Py_ssize_t size = Py_SIZE(v);
    if (size >= -1 && size <= 1) {
        *ov = 0;
        return (long long)size * (long long)((PyLongObject *)v)->ob_digit[0];
    }
#endif
    return PyLong_AsLongLongAndOverflow(v, ov);
}

static inline int cell_int(Col *c, PyObject *v, Py_ssize_t j, Py_ssize_t i, Py_ssize_t n)
{
    long long x;
    int ov;
    if (v == Py_None) {
        if (set_null(c, i, n) < 0)
            return -1;
        x = 0;
    }
    else if (PyLong_Check(v) && !PyBool_Check(v)) {
        x = int_value(v, &ov);
        if (ov) {
            overflow(j, i, c->kind == 'i' ? "int out of range for int32" : "int out of range for int64");
            return -1;
        }
        if (x == -1 && PyErr_Occurred())
            return -1;
    }
    else {
        type_error(j, i, "int", v);
        return -1;
    }
    switch (c->kind) {
    case 'i':
        if (x < INT32_MIN || x > INT32_MAX) {
            overflow(j, i, "int out of range for int32");
            return -1;
        }
        ((int32_t *)c->data.p)[i] = (int32_t)x;
        break;
    case 'T':
        ((int64_t *)c->data.p)[i] = (int64_t)(x / 1000);
        break;
    default:
        ((int64_t *)c->data.p)[i] = (int64_t)x;
    }
    return 0;
}

static inline int cell_double(Col *c, PyObject *v, Py_ssize_t j, Py_ssize_t i, Py_ssize_t n)
{
    double x;
    if (PyFloat_Check(v))
        x = PyFloat_AS_DOUBLE(v);
    else if (v == Py_None) {
        if (set_null(c, i, n) < 0)
            return -1;
        x = 0.0;
    }
    else if (PyLong_Check(v)) {
        /* As Arrow: only ints a double holds exactly (|x| <= 2**53). */
        int ov;
        long long k = int_value(v, &ov);
        if (k == -1 && PyErr_Occurred())
            return -1;
        if (ov || k > (1LL << 53) || k < -(1LL << 53)) {
            overflow(j, i, "int not exactly representable as float64");
            return -1;
        }
        x = (double)k;
    }
    else {
        type_error(j, i, "float", v);
        return -1;
    }
    ((double *)c->data.p)[i] = x;
    return 0;
}

static inline int cell_str(Col *c, PyObject *v, Py_ssize_t j, Py_ssize_t i, Py_ssize_t n)
{
    if (PyUnicode_Check(v)) {
        if (append_str(&c->data, v, j, i) < 0)
            return -1;
    }
    else if (v == Py_None) {
        if (set_null(c, i, n) < 0)
            return -1;
    }
    else {
        type_error(j, i, "str", v);
        return -1;
    }
    ((int32_t *)c->offs.p)[i + 1] = (int32_t)c->data.len;
    return 0;
}

static int cell_list(Col *c, PyObject *v, Py_ssize_t j, Py_ssize_t i, Py_ssize_t n)
{
    if (PyList_Check(v) || PyTuple_Check(v)) {
        Py_ssize_t m = PySequence_Fast_GET_SIZE(v), k;
        PyObject **items = PySequence_Fast_ITEMS(v);
        if (m > INT32_MAX - c->clen) {
            overflow(j, i, "more than 2**31-1 list items in the column");
            return -1;
        }
        if (buf_reserve(&c->coffs, m * 4) < 0)
            return -1;
        for (k = 0; k < m; k++) {
            PyObject *s = items[k];
            if (PyUnicode_Check(s)) {
                if (append_str(&c->data, s, j, i) < 0)
                    return -1;
            }
            else if (s == Py_None) {
                if (c->cnull.obj == NULL && buf_init(&c->cnull, 64 * sizeof(Py_ssize_t)) < 0)
                    return -1;
                if (buf_reserve(&c->cnull, sizeof(Py_ssize_t)) < 0)
                    return -1;
                ((Py_ssize_t *)c->cnull.p)[c->cnulls++] = c->clen + k;
                c->cnull.len += sizeof(Py_ssize_t);
            }
            else {
                PyErr_Format(PyExc_TypeError, "column %zd, row %zd: expected list items of str or None, got %.100s",
                             j, i, Py_TYPE(s)->tp_name);
                return -1;
            }
            ((int32_t *)c->coffs.p)[c->clen + k + 1] = (int32_t)c->data.len;
        }
        c->clen += m;
        c->coffs.len += m * 4;
    }
    else if (v == Py_None) {
        if (set_null(c, i, n) < 0)
            return -1;
    }
    else {
        type_error(j, i, "list or tuple of str", v);
        return -1;
    }
    ((int32_t *)c->offs.p)[i + 1] = (int32_t)c->clen;
    return 0;
}

static PyObject *col_result(Col *c)
{
    PyObject *valid = c->valid.obj != NULL ? c->valid.obj : Py_None;
    if (buf_finish(&c->data) < 0)
        return NULL;
    switch (c->kind) {
    case 's':
        return Py_BuildValue("(nOOO)", c->nulls, valid, c->offs.obj, c->data.obj);
    case 'L': {
        PyObject *cvalid = Py_None, *child, *res;
        if (buf_finish(&c->coffs) < 0)
            return NULL;
        if (c->cnulls) {
            Py_ssize_t k, *idx = (Py_ssize_t *)c->cnull.p;
            Buf b = {NULL, NULL, 0, 0};
            if (bitmap_new(&b, c->clen) < 0)
                return NULL;
            for (k = 0; k < c->cnulls; k++)
                bit_clear(&b, idx[k]);
            Py_CLEAR(c->cnull.obj);
            c->cnull = b; /* owned by the column from here on */
            cvalid = b.obj;
        }
        child = Py_BuildValue("(nnOOO)", c->clen, c->cnulls, cvalid, c->coffs.obj, c->data.obj);
        if (child == NULL)
            return NULL;
        res = Py_BuildValue("(nOOO)", c->nulls, valid, c->offs.obj, child);
        Py_DECREF(child);
        return res;
    }
    default:
        return Py_BuildValue("(nOO)", c->nulls, valid, c->data.obj);
    }
}

/* ------------------------------------------------------------------------ */

static PyObject *encode(PyObject *self, PyObject *args)
{
    PyObject *rows_arg, *kinds_obj, *seq = NULL, *out = NULL;
    PyObject **rows;
    const char *kinds;
    Py_ssize_t n, ncols, i, j;
    Col *cols = NULL;

    if (!PyArg_ParseTuple(args, "OO!:encode", &rows_arg, &PyBytes_Type, &kinds_obj))
        return NULL;
    kinds = PyBytes_AS_STRING(kinds_obj);
    ncols = PyBytes_GET_SIZE(kinds_obj);
    for (j = 0; j < ncols; j++) {
        if (strchr("TsildL", kinds[j]) == NULL || kinds[j] == '\0') {
            PyErr_Format(PyExc_ValueError, "kinds[%zd]: unknown column kind (expected one of T s i l d L)", j);
            return NULL;
        }
    }
    if (!PyList_Check(rows_arg)) {
        PyErr_Format(PyExc_TypeError, "rows: expected a list, got %.100s", Py_TYPE(rows_arg)->tp_name);
        return NULL;
    }
    seq = rows_arg;
    Py_INCREF(seq); /* held while reading (no Python code runs below to change it) */
    n = PyList_GET_SIZE(seq);
    rows = PySequence_Fast_ITEMS(seq);
    if (n > INT32_MAX || n > PY_SSIZE_T_MAX / 8 - 64) {
        PyErr_SetString(PyExc_OverflowError, "rows: more than 2**31-1 rows");
        goto done;
    }

    cols = PyMem_Calloc(ncols ? (size_t)ncols : 1, sizeof(Col));
    if (cols == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (j = 0; j < ncols; j++) {
        if (col_init(&cols[j], kinds[j], n) < 0)
            goto done;
    }

    /* Row by row: each tuple is read once, all columns' buffers are written in order. */
    for (i = 0; i < n; i++) {
        PyObject *row = rows[i], **cells;
        if (!PyTuple_Check(row)) {
            PyErr_Format(PyExc_TypeError, "row %zd: expected a tuple, got %.100s", i, Py_TYPE(row)->tp_name);
            goto done;
        }
        if (PyTuple_GET_SIZE(row) != ncols) {
            PyErr_Format(PyExc_ValueError, "row %zd: %zd fields, expected %zd", i, PyTuple_GET_SIZE(row), ncols);
            goto done;
        }
        cells = &PyTuple_GET_ITEM(row, 0);
        for (j = 0; j < ncols; j++) {
            Col *c = &cols[j];
            PyObject *v = cells[j];
            int r;
            switch (c->kind) {
            case 's':
                r = cell_str(c, v, j, i, n);
                break;
            case 'd':
                r = cell_double(c, v, j, i, n);
                break;
            case 'L':
                r = cell_list(c, v, j, i, n);
                break;
            default:
                r = cell_int(c, v, j, i, n);
            }
            if (r < 0)
                goto done;
        }
        if (i == SAMPLE_ROWS - 1 && n > SAMPLE_ROWS) {
            for (j = 0; j < ncols; j++) {
                Col *c = &cols[j];
                if (c->kind == 's' || c->kind == 'L') {
                    if (presize(&c->data, SAMPLE_ROWS, n) < 0)
                        goto done;
                }
                if (c->kind == 'L' && presize(&c->coffs, SAMPLE_ROWS, n) < 0)
                    goto done;
            }
        }
    }

    out = PyList_New(ncols);
    if (out == NULL)
        goto done;
    for (j = 0; j < ncols; j++) {
        PyObject *t = col_result(&cols[j]);
        if (t == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, j, t);
    }

done:
    if (cols != NULL) {
        for (j = 0; j < ncols; j++)
            col_clear(&cols[j]);
        PyMem_Free(cols);
    }
    Py_XDECREF(seq);
    return out;
}

PyDoc_STRVAR(encode_doc,
             "encode(rows: list[tuple], kinds: bytes) -> list\n\n"
             "Arrow buffers of every column of the rows (see the module source for the shapes).");

static PyMethodDef methods[] = {
    {"encode", encode, METH_VARARGS, encode_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "auditor._colenc",
    .m_doc = "Rows -> Arrow column buffers for the Parquet sink (auditor/sink.py).",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__colenc(void)
{
    return PyModuleDef_Init(&module);
}
