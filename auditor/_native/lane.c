/* auditor._lane: the per-connection fast lane (see auditor/fastlane.py).
 *
 * While a connection is in a plain state (no MULTI, no subscribe mode, no
 * CLIENT REPLY OFF/SKIP, no MONITOR, decoders at a frame boundary), its bytes
 * go here instead of through RequestDecoder -> Session -> Redactor. The lane
 * parses complete multibulk requests and complete replies, pairs them in
 * order and builds the audit Row directly, using plans computed once per
 * command shape by the Python redactor (so both paths give equal rows).
 *
 * It only ever accepts input it is sure about, and is stricter than the
 * Python decoders: anything else (inline commands, commands that change the
 * session's state, odd headers, RESP3 pushes and attributes, a reply read
 * before its request, very large frames) is handed back to the Python stages
 * as the exact bytes not consumed, plus the raw frames of the requests still
 * waiting for a reply. Error replies and shapes without a plan are rendered by
 * a Python callback from the raw request frame.
 *
 * No payload byte is ever put into an exception or a repr.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#include "lanefeed.h"
#include "slots.h"

#define NPLAN 34          /* plans by argument count 0..32; index 33: more arguments */
#define BIG_ARGC 33
#define MAX_DIGITS 10     /* header numbers the lane accepts (Python accepts up to 20) */
#define MAX_DEPTH 32      /* reply nesting the lane follows (deeper: handed back) */
#define ROW_FIELDS 32
#define NC_SIZE 16       /* names cache (direct mapped) */
#define MC_SIZE 512      /* mask class-string cache (direct mapped) */
#define MC_KEY 128       /* longest class string remembered (= redact._MASK_NOOP_MAX_LEN) */

enum { POL_PLAIN = 0, POL_MASK = 1, POL_HASH = 2, POL_DROP = 3 };

/* ------------------------------------------------------------------ config */

typedef struct {
    PyObject_HEAD
    PyTypeObject *row_type;
    PyObject *kind_str[256];   /* reply type byte -> reply_type text */
    PyObject *redacted;        /* list: "<redacted:N>" for N < nred */
    Py_ssize_t nred;
    PyObject *key1;            /* callable(bytes) -> str: one key under the policy */
    int policy;
    PyObject *mask_noop;       /* dict: class string -> bool (shared with auditor.redact) */
    unsigned char class_of[256];
    Py_ssize_t mask_max_len;
    Py_ssize_t max_key_chars;
    Py_ssize_t arg_keep;
    PyObject *plan_fn;         /* callable(args) -> (container, plan) */
    PyObject *variant_fn;      /* callable(args) -> plan | None (a probed argument is a word) */
    PyObject *render_fn;       /* callable(ctx, raw, ts, seq, error, reply_ts, reply_bytes, reply_type) -> Row */
    PyObject *cache;           /* name as sent -> list of NPLAN plans | dict sub -> list */
    /* recent names -> their plans list (strong references; a list stays valid after the cache is cleared) */
    PyObject *nc_name[NC_SIZE], *nc_plans[NC_SIZE];
    /* recent key class strings -> whether masking leaves such keys as they are (see auditor/redact.py) */
    struct {
        unsigned char len, noop;
        char cls[MC_KEY];
    } mc[MC_SIZE];
    PyObject *s_command, *s_ok, *s_error;
    Py_ssize_t max_pending, max_frame, max_reply, max_names, reply_keep, max_line;
    long long max_pending_bytes;
    long long commands, errors, fallbacks, handovers, surrenders;
} Config;

static void Config_dealloc(Config *c) {
    Py_XDECREF(c->row_type);
    for (int i = 0; i < 256; i++) Py_XDECREF(c->kind_str[i]);
    Py_XDECREF(c->redacted);
    Py_XDECREF(c->key1);
    Py_XDECREF(c->mask_noop);
    Py_XDECREF(c->plan_fn);
    Py_XDECREF(c->variant_fn);
    Py_XDECREF(c->render_fn);
    Py_XDECREF(c->cache);
    for (int i = 0; i < NC_SIZE; i++) {
        Py_XDECREF(c->nc_name[i]);
        Py_XDECREF(c->nc_plans[i]);
    }
    Py_XDECREF(c->s_command);
    Py_XDECREF(c->s_ok);
    Py_XDECREF(c->s_error);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static int Config_init(Config *c, PyObject *args, PyObject *kw) {
    static char *names[] = {"row_type", "kinds", "redacted", "key1", "policy", "mask_noop", "class_of",
                            "mask_max_len", "max_key_chars", "arg_keep", "plan_fn", "variant_fn",
                            "render_fn", "max_pending", "max_frame", "max_reply", "max_names",
                            "reply_keep", "max_pending_bytes", "max_line", NULL};
    PyObject *row_type, *kinds, *redacted, *key1, *mask_noop, *plan_fn, *variant_fn, *render_fn;
    Py_buffer cls;
    int policy;
    Py_ssize_t mask_max_len, max_key_chars, arg_keep, max_pending, max_frame, max_reply, max_names, reply_keep, max_line;
    long long max_pending_bytes;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!O!OiO!y*nnnOOOnnnnnLn", names, &PyType_Type, &row_type,
                                     &PyDict_Type, &kinds, &PyList_Type, &redacted, &key1, &policy,
                                     &PyDict_Type, &mask_noop, &cls, &mask_max_len, &max_key_chars, &arg_keep,
                                     &plan_fn, &variant_fn, &render_fn, &max_pending, &max_frame, &max_reply,
                                     &max_names, &reply_keep, &max_pending_bytes, &max_line))
        return -1;
    if (cls.len != 256) {
        PyBuffer_Release(&cls);
        PyErr_SetString(PyExc_ValueError, "class_of must be 256 bytes");
        return -1;
    }
    memcpy(c->class_of, cls.buf, 256);
    PyBuffer_Release(&cls);
    if (!PyType_IsSubtype((PyTypeObject *)row_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "row_type must be a tuple subclass");
        return -1;
    }
    Py_INCREF(row_type);
    Py_XSETREF(c->row_type, (PyTypeObject *)row_type);
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(kinds, &pos, &k, &v)) {
        long b = PyLong_AsLong(k);
        if (b < 0 || b > 255) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "kinds: keys are bytes values");
            return -1;
        }
        Py_INCREF(v);
        Py_XSETREF(c->kind_str[b], v);
    }
    Py_INCREF(redacted);
    Py_XSETREF(c->redacted, redacted);
    c->nred = PyList_GET_SIZE(redacted);
    Py_INCREF(key1);
    Py_XSETREF(c->key1, key1);
    c->policy = policy;
    Py_INCREF(mask_noop);
    Py_XSETREF(c->mask_noop, mask_noop);
    c->mask_max_len = mask_max_len;
    c->max_key_chars = max_key_chars;
    c->arg_keep = arg_keep;
    Py_INCREF(plan_fn);
    Py_XSETREF(c->plan_fn, plan_fn);
    Py_INCREF(variant_fn);
    Py_XSETREF(c->variant_fn, variant_fn);
    Py_INCREF(render_fn);
    Py_XSETREF(c->render_fn, render_fn);
    Py_XSETREF(c->cache, PyDict_New());
    Py_XSETREF(c->s_command, PyUnicode_InternFromString("command"));
    Py_XSETREF(c->s_ok, PyUnicode_InternFromString("ok"));
    Py_XSETREF(c->s_error, PyUnicode_InternFromString("error"));
    if (!c->cache || !c->s_command || !c->s_ok || !c->s_error) return -1;
    c->max_pending = max_pending;
    c->max_frame = max_frame;
    c->max_reply = max_reply;
    c->max_names = max_names;
    c->reply_keep = reply_keep;
    c->max_pending_bytes = max_pending_bytes;
    c->max_line = max_line;
    return 0;
}

static PyMemberDef Config_members[] = {
    {"commands", T_LONGLONG, offsetof(Config, commands), 0, "commands rendered by the lane"},
    {"errors", T_LONGLONG, offsetof(Config, errors), 0, "of which error replies"},
    {"fallbacks", T_LONGLONG, offsetof(Config, fallbacks), 0, "rows rendered by the Python callback"},
    {"handovers", T_LONGLONG, offsetof(Config, handovers), 0, "request streams handed to Python"},
    {"surrenders", T_LONGLONG, offsetof(Config, surrenders), 0, "pending requests handed to Python"},
    {NULL}};

static PyTypeObject ConfigType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "auditor._lane.Config",
    .tp_basicsize = sizeof(Config),
    .tp_dealloc = (destructor)Config_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "What every lane of one pipeline shares: policy, plans, callbacks, counters.",
    .tp_init = (initproc)Config_init,
    .tp_new = PyType_GenericNew,
    .tp_members = Config_members,
};

/* -------------------------------------------------------------------- lane */

typedef struct {
    int64_t ts, seq;
    Py_ssize_t nbytes;
    PyObject *raw;   /* the request frame (for the callback and for handing back) */
    PyObject *plan;  /* NULL: rendered by the callback */
    PyObject *keys, *args;
} Pend;

typedef struct {
    Py_ssize_t off;
    int64_t ts;
} Seg;

/* Bytes held (an unfinished frame), with the time each read of them was made:
 * bytes from seg[k].off on were read at seg[k].ts. While parsing, the
 * segments describe the joined buffer (held bytes + the new read). */
typedef struct {
    char *buf;
    Py_ssize_t len, cap;
    Seg *seg;
    Py_ssize_t nseg, segcap;
} Hold;

typedef struct {
    PyObject_HEAD
    Config *cfg;
    PyObject *ctx;
    PyObject *out;
    PyObject *prefix;  /* tuple: source, conn_id and the 9 metadata columns */
    PyObject *user, *db, *resp;
    int64_t seq;
    long long commands;
    int accepting;
    Hold q, p;
    Pend *pq;
    Py_ssize_t phead, pcount, pcap;
    long long pending_bytes;
    long long req_consumed, rep_consumed;
    PyObject *rest; /* reply bytes not taken when replies() returned False */
    Py_ssize_t *off, *lens, acap; /* argument offsets and lengths of the request being parsed */
} Lane;

static void pend_clear(Pend *e) {
    Py_CLEAR(e->raw);
    Py_CLEAR(e->plan);
    Py_CLEAR(e->keys);
    Py_CLEAR(e->args);
}

static void Lane_drop_pending(Lane *l) {
    while (l->pcount) {
        pend_clear(&l->pq[l->phead]);
        l->phead = (l->phead + 1) % l->pcap;
        l->pcount--;
    }
    l->phead = 0;
    l->pending_bytes = 0;
}

static void Lane_dealloc(Lane *l) {
    if (l->pq) Lane_drop_pending(l);
    PyMem_Free(l->pq);
    PyMem_Free(l->off);
    PyMem_Free(l->lens);
    PyMem_Free(l->q.buf);
    PyMem_Free(l->q.seg);
    PyMem_Free(l->p.seg);
    PyMem_Free(l->p.buf);
    Py_XDECREF(l->cfg);
    Py_XDECREF(l->ctx);
    Py_XDECREF(l->out);
    Py_XDECREF(l->prefix);
    Py_XDECREF(l->user);
    Py_XDECREF(l->db);
    Py_XDECREF(l->resp);
    Py_XDECREF(l->rest);
    Py_TYPE(l)->tp_free((PyObject *)l);
}

static int Lane_init(Lane *l, PyObject *args, PyObject *kw) {
    static char *names[] = {"config", "ctx", "out", "prefix", NULL};
    PyObject *cfg, *ctx, *out, *prefix;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!OO!O!", names, &ConfigType, &cfg, &ctx, &PyList_Type, &out,
                                     &PyTuple_Type, &prefix))
        return -1;
    if (PyTuple_GET_SIZE(prefix) != 11) {
        PyErr_SetString(PyExc_ValueError, "prefix: source, conn_id and 9 metadata columns");
        return -1;
    }
    Py_INCREF(cfg);
    Py_XSETREF(l->cfg, (Config *)cfg);
    Py_INCREF(ctx);
    Py_XSETREF(l->ctx, ctx);
    Py_INCREF(out);
    Py_XSETREF(l->out, out);
    Py_INCREF(prefix);
    Py_XSETREF(l->prefix, prefix);
    Py_INCREF(Py_None);
    Py_XSETREF(l->user, Py_None);
    Py_INCREF(Py_None);
    Py_XSETREF(l->db, Py_None);
    Py_INCREF(Py_None);
    Py_XSETREF(l->resp, Py_None);
    l->accepting = 0;
    return 0;
}

static int seg_push(Hold *h, Py_ssize_t off, int64_t ts) {
    if (h->nseg == h->segcap) {
        Py_ssize_t cap = h->segcap ? h->segcap * 2 : 8;
        Seg *n = PyMem_Realloc(h->seg, cap * sizeof(Seg));
        if (!n) {
            PyErr_NoMemory();
            return -1;
        }
        h->seg = n;
        h->segcap = cap;
    }
    h->seg[h->nseg].off = off;
    h->seg[h->nseg].ts = ts;
    h->nseg++;
    return 0;
}

/* Room for need bytes in the hold (what it holds is kept). */
static int hold_reserve(Hold *h, Py_ssize_t need) {
    if (need <= h->cap) return 0;
    Py_ssize_t cap = h->cap ? h->cap : 4096;
    while (cap < need) cap *= 2;
    char *b = PyMem_Realloc(h->buf, cap);
    if (!b) {
        PyErr_NoMemory();
        return -1;
    }
    h->buf = b;
    h->cap = cap;
    return 0;
}

/* The bytes to parse: what is held plus data (copied behind it), or data alone. */
static int hold_join(Hold *h, const char *data, Py_ssize_t n, int64_t ts, const char **s, Py_ssize_t *len) {
    if (!h->len) {
        h->nseg = 0;
        if (seg_push(h, 0, ts) < 0) return -1;
        *s = data;
        *len = n;
        return 0;
    }
    Py_ssize_t need = h->len + n;
    if (hold_reserve(h, need) < 0) return -1;
    if (n && seg_push(h, h->len, ts) < 0) return -1;
    memcpy(h->buf + h->len, data, n);
    *s = h->buf;
    *len = need;
    return 0;
}

/* When the byte at pos of the joined buffer was read. */
static int64_t ts_at(Hold *h, Py_ssize_t pos) {
    for (Py_ssize_t k = h->nseg - 1; k > 0; k--)
        if (h->seg[k].off <= pos) return h->seg[k].ts;
    return h->seg[0].ts;
}

/* Hold s[pos:end) of the joined buffer (an unfinished frame), with its read times. */
static int hold_keep(Hold *h, const char *s, Py_ssize_t pos, Py_ssize_t end) {
    Py_ssize_t n = end - pos, k0 = 0, m = 0;
    for (Py_ssize_t k = h->nseg - 1; k > 0; k--)
        if (h->seg[k].off <= pos) {
            k0 = k;
            break;
        }
    for (Py_ssize_t k = k0; k < h->nseg; k++) {
        if (k > k0 && h->seg[k].off >= end) break;
        h->seg[m].off = k == k0 ? 0 : h->seg[k].off - pos;
        h->seg[m].ts = h->seg[k].ts;
        m++;
    }
    h->nseg = m;
    int joined = s == h->buf; /* (growing moves the buffer s points into) */
    if (hold_reserve(h, n) < 0) return -1;
    if (joined) s = h->buf;
    memmove(h->buf, s + pos, n);
    h->len = n;
    return 0;
}

static void hold_clear(Hold *h) {
    h->len = 0;
    h->nseg = 0;
}

/* Pieces (ts, bytes) for the Python decoders: s[from:end) of the joined
 * buffer, one per read, each with its read time. */
static PyObject *hold_pieces(Hold *h, const char *s, Py_ssize_t from, Py_ssize_t end) {
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    for (Py_ssize_t k = 0; k < h->nseg; k++) {
        Py_ssize_t a = h->seg[k].off, b = k + 1 < h->nseg ? h->seg[k + 1].off : end;
        if (a < from) a = from;
        if (b > end) b = end;
        if (a >= b) continue;
        PyObject *t = Py_BuildValue("(Ly#)", (long long)h->seg[k].ts, s + a, b - a);
        if (!t || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(t);
    }
    return out;
}

/* A decimal number of 1..MAX_DIGITS digits without a leading zero (unless "0")
 * ending at "\r\n"; returns the offset after "\n", 0 if more bytes are needed,
 * -1 if the lane does not accept it. */
static Py_ssize_t read_num(const char *s, Py_ssize_t i, Py_ssize_t end, long long *v, int allow_neg1) {
    Py_ssize_t start = i;
    if (allow_neg1 && i < end && s[i] == '-') {
        if (i + 1 >= end) return 0;
        if (s[i + 1] != '1') return -1;
        if (i + 3 >= end) return 0;
        if (s[i + 2] != '\r' || s[i + 3] != '\n') return -1;
        *v = -1;
        return i + 4;
    }
    long long n = 0;
    while (i < end && s[i] >= '0' && s[i] <= '9') {
        if (i - start >= MAX_DIGITS) return -1;
        n = n * 10 + (s[i] - '0');
        i++;
    }
    if (i >= end) return i - start > MAX_DIGITS ? -1 : 0;
    if (i == start || s[i] != '\r') return -1;
    if (s[start] == '0' && i - start > 1) return -1;
    if (i + 1 >= end) return 0;
    if (s[i + 1] != '\n') return -1;
    *v = n;
    return i + 2;
}

/* One multibulk request at s[0:end): 1 complete (*fend set, offsets in off/len),
 * 0 needs more bytes, -1 not for the lane. */
static int parse_request(const char *s, Py_ssize_t end, Py_ssize_t *fend, Py_ssize_t **off, Py_ssize_t **lens,
                         Py_ssize_t *cap, Py_ssize_t *argc, Py_ssize_t max_frame) {
    if (s[0] != '*') return -1;
    long long n;
    Py_ssize_t i = read_num(s, 1, end, &n, 0);
    if (i <= 0) return (int)i;
    if (n < 1 || n > 1024 * 1024) return -1;
    if (n > *cap) {
        Py_ssize_t c = *cap ? *cap : 64;
        while (c < n) c *= 2;
        Py_ssize_t *o = PyMem_Realloc(*off, c * sizeof(Py_ssize_t));
        if (!o) return -2;
        *off = o;
        Py_ssize_t *ln = PyMem_Realloc(*lens, c * sizeof(Py_ssize_t));
        if (!ln) return -2;
        *lens = ln;
        *cap = c;
    }
    for (long long k = 0; k < n; k++) {
        if (i >= end) return 0;
        if (s[i] != '$') return -1;
        long long ln;
        Py_ssize_t j = read_num(s, i + 1, end, &ln, 0);
        if (j <= 0) return (int)j;
        if (ln > max_frame) return -1;
        if (j + ln + 2 > end) return j + ln + 2 > max_frame ? -1 : 0;
        if (s[j + ln] != '\r' || s[j + ln + 1] != '\n') return -1;
        (*off)[k] = j;
        (*lens)[k] = (Py_ssize_t)ln;
        i = j + ln + 2;
    }
    *fend = i;
    *argc = (Py_ssize_t)n;
    return 1;
}

/* One reply at s[0:end) of the types the lane follows: 1 complete (*fend), 0
 * needs more, -1 not for the lane. */
static int parse_reply(const char *s, Py_ssize_t end, Py_ssize_t *fend, Py_ssize_t max_line) {
    long long left[MAX_DEPTH];
    int depth = 0;
    Py_ssize_t i = 0;
    for (;;) {
        if (i >= end) return 0;
        char t = s[i];
        long long v;
        Py_ssize_t j;
        switch (t) {
        case '+':
        case '-': {
            Py_ssize_t k = i + 1;
            while (k < end && s[k] != '\r' && s[k] != '\n') k++;
            if (k - i - 1 > max_line) return -1; /* (Python: "line too long") */
            if (k >= end) return 0;
            if (s[k] != '\r') return -1;
            if (k + 1 >= end) return 0;
            if (s[k + 1] != '\n') return -1;
            i = k + 2;
            break;
        }
        case ':': {
            Py_ssize_t k = i + 1;
            if (k < end && s[k] == '-') k++;
            Py_ssize_t d0 = k;
            while (k < end && s[k] >= '0' && s[k] <= '9') k++;
            if (k - d0 > 18) return -1;
            if (k >= end) return 0;
            if (k == d0 || s[k] != '\r') return -1;
            if (s[d0] == '0' && (k - d0 > 1 || d0 > i + 1)) return -1;
            if (k + 1 >= end) return 0;
            if (s[k + 1] != '\n') return -1;
            i = k + 2;
            break;
        }
        case '_':
            if (i + 2 >= end) return 0;
            if (s[i + 1] != '\r' || s[i + 2] != '\n') return -1;
            i += 3;
            break;
        case '$':
            j = read_num(s, i + 1, end, &v, 1);
            if (j <= 0) return (int)j;
            if (v < 0) {
                i = j;
                break;
            }
            if (j + v + 2 > end) return 0;
            if (s[j + v] != '\r' || s[j + v + 1] != '\n') return -1;
            i = j + v + 2;
            break;
        case '*':
        case '%':
        case '~':
            j = read_num(s, i + 1, end, &v, t == '*');
            if (j <= 0) return (int)j;
            i = j;
            if (v > 0) {
                if (depth >= MAX_DEPTH) return -1;
                left[depth++] = t == '%' ? 2 * v : v;
                continue;  /* its first element */
            }
            break;
        default:
            return -1;
        }
        /* one element done: close every aggregate it completes */
        while (depth && --left[depth - 1] == 0) depth--;
        if (!depth) {
            *fend = i;
            return 1;
        }
    }
}

/* ------------------------------------------------------------ rendering */

static PyObject *render_key(Config *c, const char *s, Py_ssize_t n) {
    if (c->policy == POL_PLAIN || c->policy == POL_MASK) {
        int ascii = 1;
        for (Py_ssize_t i = 0; i < n; i++)
            if ((unsigned char)s[i] >= 128) {
                ascii = 0;
                break;
            }
        if (ascii && n <= c->max_key_chars) {
            int plain = c->policy == POL_PLAIN;
            if (!plain && n <= c->mask_max_len && n <= MC_KEY) {
                char cls[MC_KEY];
                uint32_t h = 2166136261u;
                for (Py_ssize_t i = 0; i < n; i++) {
                    cls[i] = (char)c->class_of[(unsigned char)s[i]];
                    h = (h ^ (unsigned char)cls[i]) * 16777619u;
                }
                h = (h ^ (uint32_t)n) % MC_SIZE;
                if (c->mc[h].len == n && n && !memcmp(c->mc[h].cls, cls, n)) {
                    plain = c->mc[h].noop;
                } else {
                    PyObject *key = PyBytes_FromStringAndSize(cls, n);
                    if (!key) return NULL;
                    PyObject *noop = PyDict_GetItemWithError(c->mask_noop, key);
                    Py_DECREF(key);
                    if (!noop && PyErr_Occurred()) return NULL;
                    plain = noop == Py_True;
                    if (noop && n) { /* (answers the Python side computed: a pure function of the class string) */
                        c->mc[h].len = (unsigned char)n;
                        c->mc[h].noop = (unsigned char)plain;
                        memcpy(c->mc[h].cls, cls, n);
                    }
                }
            }
            if (plain) {
                PyObject *u = PyUnicode_New(n, 127);
                if (!u) return NULL;
                memcpy(PyUnicode_1BYTE_DATA(u), s, n);
                return u;
            }
        }
    }
    PyObject *raw = PyBytes_FromStringAndSize(s, n);
    if (!raw) return NULL;
    PyObject *r = PyObject_CallOneArg(c->key1, raw);
    Py_DECREF(raw);
    return r;
}

static PyObject *redacted(Config *c, Py_ssize_t n) {
    if (n < c->nred) {
        PyObject *r = PyList_GET_ITEM(c->redacted, n);
        Py_INCREF(r);
        return r;
    }
    return PyUnicode_FromFormat("<redacted:%zd>", n);
}

static PyObject *args_list(const char *s, Py_ssize_t *off, Py_ssize_t *lens, Py_ssize_t argc) {
    PyObject *a = PyList_New(argc);
    if (!a) return NULL;
    for (Py_ssize_t k = 0; k < argc; k++) {
        PyObject *b = PyBytes_FromStringAndSize(s + off[k], lens[k]);
        if (!b) {
            Py_DECREF(a);
            return NULL;
        }
        PyList_SET_ITEM(a, k, b);
    }
    return a;
}

/* The plan for a request (new reference): a tuple, Py_None (render with the
 * callback) or Py_False (not for the lane). */
static PyObject *find_plan(Config *c, const char *s, Py_ssize_t *off, Py_ssize_t *lens, Py_ssize_t argc) {
    Py_ssize_t idx = argc < BIG_ARGC ? argc : BIG_ARGC;
    const char *nm = s + off[0];
    Py_ssize_t nl = lens[0];
    unsigned slot = nl ? ((unsigned)nl * 31u + (unsigned char)nm[0] * 7u + (unsigned char)nm[nl - 1]) % NC_SIZE : 0;
    PyObject *cn = c->nc_name[slot];
    if (cn && PyBytes_GET_SIZE(cn) == nl && !memcmp(PyBytes_AS_STRING(cn), nm, nl)) {
        PyObject *p = PyList_GET_ITEM(c->nc_plans[slot], idx);
        if (p != Py_Ellipsis) {
            Py_INCREF(p);
            return p;
        }
    }
    PyObject *name = PyBytes_FromStringAndSize(nm, nl);
    if (!name) return NULL;
    PyObject *entry = PyDict_GetItemWithError(c->cache, name);
    PyObject *plans = NULL; /* borrowed */
    if (entry) {
        if (PyList_CheckExact(entry)) {
            plans = entry;
            Py_INCREF(name);
            Py_XSETREF(c->nc_name[slot], name);
            Py_INCREF(entry);
            Py_XSETREF(c->nc_plans[slot], entry);
        } else { /* container: by subcommand as sent */
            if (argc < 2) {
                Py_DECREF(name);
                Py_RETURN_NONE;
            }
            PyObject *sub = PyBytes_FromStringAndSize(s + off[1], lens[1]);
            if (!sub) {
                Py_DECREF(name);
                return NULL;
            }
            plans = PyDict_GetItemWithError(entry, sub);
            Py_DECREF(sub);
            if (!plans && PyErr_Occurred()) {
                Py_DECREF(name);
                return NULL;
            }
        }
        if (plans) {
            PyObject *p = PyList_GET_ITEM(plans, idx);
            if (p != Py_Ellipsis) {
                Py_DECREF(name);
                Py_INCREF(p);
                return p;
            }
        }
    } else if (PyErr_Occurred()) {
        Py_DECREF(name);
        return NULL;
    }
    /* not known yet: ask the redactor */
    PyObject *a = args_list(s, off, lens, argc);
    if (!a) {
        Py_DECREF(name);
        return NULL;
    }
    PyObject *res = PyObject_CallOneArg(c->plan_fn, a);
    Py_DECREF(a);
    if (!res) {
        Py_DECREF(name);
        return NULL;
    }
    if (!PyTuple_Check(res) || PyTuple_GET_SIZE(res) != 2) {
        Py_DECREF(res);
        Py_DECREF(name);
        PyErr_SetString(PyExc_TypeError, "plan_fn must return (container, plan)");
        return NULL;
    }
    int container = PyObject_IsTrue(PyTuple_GET_ITEM(res, 0));
    PyObject *plan = PyTuple_GET_ITEM(res, 1);
    Py_INCREF(plan);
    Py_DECREF(res);
    if (!entry) {
        /* (cleared only here: entry, when found above, is a borrowed reference into the cache) */
        if (PyDict_GET_SIZE(c->cache) >= c->max_names) PyDict_Clear(c->cache);
        entry = container ? PyDict_New() : PyList_New(0);
        if (!entry) goto fail;
        if (!container) {
            for (int k = 0; k < NPLAN; k++) {
                if (PyList_Append(entry, Py_Ellipsis) < 0) {
                    Py_DECREF(entry);
                    goto fail;
                }
            }
        }
        if (PyDict_SetItem(c->cache, name, entry) < 0) {
            Py_DECREF(entry);
            goto fail;
        }
        Py_DECREF(entry); /* the cache holds it */
    }
    if (PyList_CheckExact(entry)) {
        plans = entry;
    } else if (argc >= 2 && PyDict_GET_SIZE(entry) < c->max_names) {
        PyObject *sub = PyBytes_FromStringAndSize(s + off[1], lens[1]);
        if (!sub) goto fail;
        plans = PyDict_GetItemWithError(entry, sub);
        if (!plans) {
            if (PyErr_Occurred()) {
                Py_DECREF(sub);
                goto fail;
            }
            PyObject *lst = PyList_New(0);
            for (int k = 0; lst && k < NPLAN; k++) {
                if (PyList_Append(lst, Py_Ellipsis) < 0) Py_CLEAR(lst);
            }
            if (!lst || PyDict_SetItem(entry, sub, lst) < 0) {
                Py_XDECREF(lst);
                Py_DECREF(sub);
                goto fail;
            }
            Py_DECREF(lst);
            plans = lst;
        }
        Py_DECREF(sub);
    } else {
        plans = NULL;
    }
    if (plans) {
        Py_INCREF(plan);
        PyList_SetItem(plans, idx, plan); /* steals */
    }
    Py_DECREF(name);
    return plan;
fail:
    Py_DECREF(plan);
    Py_DECREF(name);
    return NULL;
}

/* keys and args of a request under a plan tuple:
 * (command, subcommand, acl, keys, acts, probe, tokens, sizes).
 * Returns 1 rendered, 0 render with the callback instead, -1 error. */
static int render(Config *c, PyObject **plan_io, const char *s, Py_ssize_t *off, Py_ssize_t *lens, Py_ssize_t argc,
                  PyObject **keys_out, PyObject **args_out) {
    PyObject *plan = *plan_io;
    PyObject *probe = PyTuple_GET_ITEM(plan, 5);
    Py_ssize_t np = PyTuple_GET_SIZE(probe);
    if (np) {
        PyObject *tokens = PyTuple_GET_ITEM(plan, 6), *sizes = PyTuple_GET_ITEM(plan, 7);
        for (Py_ssize_t k = 0; k < np; k++) {
            Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(probe, k));
            if (i < 0 || i >= argc) return 0;
            PyObject *len = PyLong_FromSsize_t(lens[i]);
            if (!len) return -1;
            int in = PySet_Contains(sizes, len);
            Py_DECREF(len);
            if (in < 0) return -1;
            if (!in) continue;
            PyObject *up = PyBytes_FromStringAndSize(s + off[i], lens[i]);
            if (!up) return -1;
            char *u = PyBytes_AS_STRING(up);
            for (Py_ssize_t j = 0; j < lens[i]; j++)
                if (u[j] >= 'a' && u[j] <= 'z') u[j] -= 32;
            in = PySet_Contains(tokens, up);
            Py_DECREF(up);
            if (in < 0) return -1;
            if (in) { /* a word of the command: the plan of this word signature */
                PyObject *a = args_list(s, off, lens, argc);
                if (!a) return -1;
                PyObject *v = PyObject_CallOneArg(c->variant_fn, a);
                Py_DECREF(a);
                if (!v) return -1;
                if (!PyTuple_Check(v)) {
                    Py_DECREF(v);
                    return 0;
                }
                Py_SETREF(*plan_io, v);
                plan = v;
                break;
            }
        }
    }
    PyObject *kpos = PyTuple_GET_ITEM(plan, 3), *acts = PyTuple_GET_ITEM(plan, 4);
    Py_ssize_t nk = PyTuple_GET_SIZE(kpos), na = PyTuple_GET_SIZE(acts);
    for (Py_ssize_t k = 0; k < nk; k++) {
        Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(kpos, k));
        if (i < 0 || i >= argc || lens[i] > c->arg_keep) return 0; /* (a long key: the callback clips it) */
    }
    PyObject *keys = PyList_New(c->policy == POL_DROP ? 0 : nk);
    if (!keys) return -1;
    if (c->policy != POL_DROP) {
        for (Py_ssize_t k = 0; k < nk; k++) {
            Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(kpos, k));
            PyObject *t = render_key(c, s + off[i], lens[i]);
            if (!t) {
                Py_DECREF(keys);
                return -1;
            }
            PyList_SET_ITEM(keys, k, t);
        }
    }
    PyObject *out = PyList_New(na);
    if (!out) {
        Py_DECREF(keys);
        return -1;
    }
    for (Py_ssize_t k = 0; k < na; k++) {
        PyObject *act = PyTuple_GET_ITEM(acts, k), *t;
        if (PyLong_CheckExact(act)) {
            Py_ssize_t i = PyLong_AsSsize_t(act);
            if (i < 0 || i >= argc) {
                Py_DECREF(keys);
                Py_DECREF(out);
                return 0;
            }
            t = redacted(c, lens[i]);
            if (!t) {
                Py_DECREF(keys);
                Py_DECREF(out);
                return -1;
            }
        } else {
            Py_INCREF(act);
            t = act;
        }
        PyList_SET_ITEM(out, k, t);
    }
    /* Only strings in them, and never changed after: no cycle can pass through them, so the cyclic GC
     * need not walk them (the sink holds rows until it encodes them; see make_row). */
    PyObject_GC_UnTrack(keys);
    PyObject_GC_UnTrack(out);
    *keys_out = keys;
    *args_out = out;
    return 1;
}

/* ------------------------------------------------------------ methods */

static PyObject *Lane_enter(Lane *l, PyObject *args) {
    PyObject *user, *db, *resp;
    long long seq;
    if (!PyArg_ParseTuple(args, "OOOL", &user, &db, &resp, &seq)) return NULL;
    if (l->pcount || l->q.len || l->p.len) {
        PyErr_SetString(PyExc_RuntimeError, "lane entered while holding requests");
        return NULL;
    }
    Py_INCREF(user);
    Py_SETREF(l->user, user);
    Py_INCREF(db);
    Py_SETREF(l->db, db);
    Py_INCREF(resp);
    Py_SETREF(l->resp, resp);
    l->seq = seq;
    l->accepting = 1;
    Py_RETURN_NONE;
}

static int pend_push(Lane *l, Pend *e) {
    if (l->pcount == l->pcap) {
        Py_ssize_t cap = l->pcap ? l->pcap * 2 : 16;
        Pend *n = PyMem_Malloc(cap * sizeof(Pend));
        if (!n) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t k = 0; k < l->pcount; k++) n[k] = l->pq[(l->phead + k) % l->pcap];
        PyMem_Free(l->pq);
        l->pq = n;
        l->pcap = cap;
        l->phead = 0;
    }
    l->pq[(l->phead + l->pcount) % l->pcap] = *e;
    l->pcount++;
    l->pending_bytes += e->nbytes;
    return 0;
}

/* requests(data, ts) -> None (all taken) | [(ts, bytes), ...] (the rest, from
 * the first frame the lane does not take: the caller feeds it to Python) */
static PyObject *lane_requests(Lane *l, const char *data, Py_ssize_t n, long long ts) {
    Config *c = l->cfg;
    if (!l->accepting) return Py_BuildValue("[(Ly#)]", ts, data, n);
    const char *s;
    Py_ssize_t end;
    if (hold_join(&l->q, data, n, ts, &s, &end) < 0) return NULL;
    Py_ssize_t pos = 0;
    Py_ssize_t argc = 0, fend = 0;
    PyObject *result = NULL;
    for (;;) {
        if (pos >= end) {
            hold_clear(&l->q);
            result = Py_None;
            Py_INCREF(result);
            break;
        }
        int64_t fts = ts_at(&l->q, pos);
        int r = -1;
        if (l->pcount < c->max_pending && l->pending_bytes < c->max_pending_bytes)
            r = parse_request(s + pos, end - pos, &fend, &l->off, &l->lens, &l->acap, &argc, c->max_frame);
        if (r == -2) {
            PyErr_NoMemory();
            break;
        }
        if (r == 0 && end - pos > c->max_frame) r = -1; /* a frame this large: Python streams it */
        if (r == 0) {
            if (hold_keep(&l->q, s, pos, end) < 0) break;
            result = Py_None;
            Py_INCREF(result);
            break;
        }
        PyObject *plan = NULL;
        if (r == 1) {
            plan = find_plan(c, s + pos, l->off, l->lens, argc);
            if (!plan) break;
            if (plan == Py_False) {
                Py_CLEAR(plan);
                r = -1;
            }
        }
        if (r < 0) { /* from here on the Python decoder reads this stream */
            result = hold_pieces(&l->q, s, pos, end);
            hold_clear(&l->q);
            l->accepting = 0;
            c->handovers++;
            break;
        }
        Pend e = {fts, l->seq + 1, fend, NULL, NULL, NULL, NULL};
        e.raw = PyBytes_FromStringAndSize(s + pos, fend);
        if (!e.raw) {
            Py_DECREF(plan);
            break;
        }
        if (plan != Py_None) {
            int ok = render(c, &plan, s + pos, l->off, l->lens, argc, &e.keys, &e.args);
            if (ok < 0) {
                Py_DECREF(plan);
                pend_clear(&e);
                break;
            }
            if (ok) {
                e.plan = plan;
                plan = NULL;
            }
        }
        Py_XDECREF(plan);
        if (pend_push(l, &e) < 0) {
            pend_clear(&e);
            break;
        }
        l->seq++;
        l->commands++;
        l->req_consumed += fend;
        pos += fend;
    }
    return result;
}

static PyObject *Lane_requests(Lane *l, PyObject *const *argv, Py_ssize_t argn) {
    if (argn != 2 || !PyBytes_Check(argv[0])) {
        PyErr_SetString(PyExc_TypeError, "requests(data: bytes, ts_ns: int)");
        return NULL;
    }
    long long ts = PyLong_AsLongLong(argv[1]);
    if (ts == -1 && PyErr_Occurred()) return NULL;
    return lane_requests(l, PyBytes_AS_STRING(argv[0]), PyBytes_GET_SIZE(argv[0]), ts);
}

/* the row of the head request and this reply (new reference) */
static PyObject *make_row(Lane *l, Pend *e, char kind, int64_t rts, Py_ssize_t rbytes, const char *err,
                          Py_ssize_t errlen) {
    Config *c = l->cfg;
    PyObject *rtype = c->kind_str[(unsigned char)kind];
    if (!rtype) rtype = Py_None;
    if (kind == '-' || !e->plan) {
        PyObject *errb;
        if (kind == '-') {
            errb = PyBytes_FromStringAndSize(err, errlen);
            if (!errb) return NULL;
        } else {
            errb = Py_None;
            Py_INCREF(errb);
        }
        c->fallbacks++;
        PyObject *r = PyObject_CallFunction(c->render_fn, "OOLLOLnO", l->ctx, e->raw, (long long)e->ts,
                                            (long long)e->seq, errb, (long long)rts, rbytes, rtype);
        Py_DECREF(errb);
        return r;
    }
    PyTypeObject *rt = c->row_type;
    PyObject *row = rt->tp_alloc(rt, ROW_FIELDS);
    if (!row) return NULL;
    PyObject *plan = e->plan;
#define SET(i, v)                              \
    do {                                       \
        PyObject *_v = (v);                    \
        if (!_v) goto fail;                    \
        PyTuple_SET_ITEM(row, (i), _v);        \
    } while (0)
#define SETREF(i, v)                           \
    do {                                       \
        PyObject *_v = (v);                    \
        Py_INCREF(_v);                         \
        PyTuple_SET_ITEM(row, (i), _v);        \
    } while (0)
    SET(0, PyLong_FromLongLong(e->ts));
    SETREF(1, c->s_command);
    SETREF(2, PyTuple_GET_ITEM(l->prefix, 0));
    SETREF(3, PyTuple_GET_ITEM(l->prefix, 1));
    SET(4, PyLong_FromLongLong(e->seq));
    for (int k = 2; k < 11; k++) SETREF(3 + k, PyTuple_GET_ITEM(l->prefix, k));
    SETREF(14, l->user);
    SETREF(15, l->db);
    SETREF(16, PyTuple_GET_ITEM(plan, 0));
    SETREF(17, PyTuple_GET_ITEM(plan, 1));
    SETREF(18, e->keys);
    SETREF(19, e->args);
    SETREF(20, c->s_ok);
    SETREF(21, Py_None);
    SET(22, PyFloat_FromDouble((double)(rts - e->ts) / 1000.0));
    SET(23, PyLong_FromSsize_t(e->nbytes));
    SET(24, PyLong_FromSsize_t(rbytes));
    SETREF(25, rtype);
    SETREF(26, l->resp);
    SETREF(27, Py_None);
    SETREF(28, PyTuple_GET_ITEM(plan, 2));
    SETREF(29, Py_None);
    SETREF(30, Py_None);
    SETREF(31, Py_None);
#undef SET
#undef SETREF
    /* A row holds strings, numbers, None and the untracked key/argument lists, and is never changed: it
     * cannot be part of a cycle. Untracked, the rows buffered for the sink cost the cyclic GC nothing
     * (tracked, every young-generation pass walked them). */
    PyObject_GC_UnTrack(row);
    return row;
fail:
    Py_DECREF(row); /* (unset items are NULL: tuple dealloc skips them) */
    return NULL;
}

/* replies(data, ts) -> None (all taken) | [(ts, bytes), ...] (bytes after the
 * last pending request's reply: for Python) | False (the lane cannot go on:
 * call surrender(), which returns these bytes too) */
static PyObject *lane_replies(Lane *l, const char *data, Py_ssize_t n, long long ts) {
    Config *c = l->cfg;
    const char *s;
    Py_ssize_t end;
    if (hold_join(&l->p, data, n, ts, &s, &end) < 0) return NULL;
    Py_ssize_t pos = 0, fend = 0;
    for (;;) {
        if (pos >= end) {
            hold_clear(&l->p);
            Py_RETURN_NONE;
        }
        int64_t fts = ts_at(&l->p, pos);
        if (!l->pcount) {
            PyObject *r = hold_pieces(&l->p, s, pos, end);
            hold_clear(&l->p);
            return r;
        }
        int r = parse_reply(s + pos, end - pos, &fend, c->max_line);
        Pend *e = &l->pq[l->phead];
        if (r == 0 && end - pos <= c->max_reply) {
            if (hold_keep(&l->p, s, pos, end) < 0) return NULL;
            Py_RETURN_NONE;
        }
        if (r != 1 || fts < e->ts) {
            /* keep the rest (one piece per read time) for surrender() */
            PyObject *rest = hold_pieces(&l->p, s, pos, end);
            if (!rest) return NULL;
            hold_clear(&l->p);
            Py_XSETREF(l->rest, rest);
            Py_RETURN_FALSE;
        }
        const char *rs = s + pos;
        Py_ssize_t elen = 0;
        if (rs[0] == '-') {
            elen = fend - 3;
            if (elen > c->reply_keep) elen = c->reply_keep;
        }
        PyObject *row = make_row(l, e, rs[0], fts, fend, rs + 1, elen);
        if (!row) return NULL;
        int ok = PyList_Append(l->out, row);
        Py_DECREF(row);
        if (ok < 0) return NULL;
        c->commands++;
        if (rs[0] == '-') c->errors++;
        l->pending_bytes -= e->nbytes;
        pend_clear(e);
        l->phead = (l->phead + 1) % l->pcap;
        l->pcount--;
        l->rep_consumed += fend;
        pos += fend;
    }
}

static PyObject *Lane_replies(Lane *l, PyObject *const *argv, Py_ssize_t argn) {
    if (argn != 2 || !PyBytes_Check(argv[0])) {
        PyErr_SetString(PyExc_TypeError, "replies(data: bytes, ts_ns: int)");
        return NULL;
    }
    long long ts = PyLong_AsLongLong(argv[1]);
    if (ts == -1 && PyErr_Occurred()) return NULL;
    return lane_replies(l, PyBytes_AS_STRING(argv[0]), PyBytes_GET_SIZE(argv[0]), ts);
}

/* release_requests() -> [(ts, bytes)]: the request bytes held (an unfinished
 * frame); from now on the Python decoder reads this stream. */
static PyObject *Lane_release_requests(Lane *l, PyObject *unused) {
    PyObject *r = hold_pieces(&l->q, l->q.buf, 0, l->q.len);
    if (!r) return NULL;
    hold_clear(&l->q);
    if (l->accepting) l->cfg->handovers++;
    l->accepting = 0;
    return r;
}

/* surrender() -> (requests: [(raw, ts, seq)], reply_pieces: [(ts, bytes)]):
 * everything the lane holds, for the Python stages; the lane is then empty
 * and takes nothing until enter(). Held request bytes: release_requests(). */
static PyObject *Lane_surrender(Lane *l, PyObject *unused) {
    PyObject *reqs = PyList_New(0);
    if (!reqs) return NULL;
    for (Py_ssize_t k = 0; k < l->pcount; k++) {
        Pend *e = &l->pq[(l->phead + k) % l->pcap];
        PyObject *t = Py_BuildValue("(OLL)", e->raw, (long long)e->ts, (long long)e->seq);
        if (!t || PyList_Append(reqs, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(reqs);
            return NULL;
        }
        Py_DECREF(t);
    }
    l->cfg->surrenders += l->pcount;
    Lane_drop_pending(l);
    PyObject *rest = l->rest;
    l->rest = NULL;
    if (!rest) {
        rest = hold_pieces(&l->p, l->p.buf, 0, l->p.len);
        if (!rest) {
            Py_DECREF(reqs);
            return NULL;
        }
    }
    hold_clear(&l->p);
    return Py_BuildValue("(NN)", reqs, rest);
}

static PyObject *Lane_take_consumed(Lane *l, PyObject *unused) {
    PyObject *r = Py_BuildValue("(LL)", l->req_consumed, l->rep_consumed);
    l->req_consumed = l->rep_consumed = 0;
    return r;
}

static PyObject *Lane_take_commands(Lane *l, PyObject *unused) {
    long long n = l->commands;
    l->commands = 0;
    return PyLong_FromLongLong(n);
}

static PyObject *Lane_get_pending(Lane *l, void *unused) { return PyLong_FromSsize_t(l->pcount); }
static PyObject *Lane_get_busy(Lane *l, void *unused) { return PyBool_FromLong(l->pcount || l->p.len); }
static PyObject *Lane_get_held(Lane *l, void *unused) { return PyLong_FromSsize_t(l->q.len + l->p.len); }

static PyGetSetDef Lane_getset[] = {
    {"pending", (getter)Lane_get_pending, NULL, "requests waiting for a reply", NULL},
    {"busy", (getter)Lane_get_busy, NULL, "replies go to the lane first", NULL},
    {"held", (getter)Lane_get_held, NULL, "bytes of unfinished frames held", NULL},
    {NULL}};

static PyMemberDef Lane_members[] = {
    {"seq", T_LONGLONG, offsetof(Lane, seq), READONLY, "seq of the last request taken"},
    {"accepting", T_INT, offsetof(Lane, accepting), READONLY, "requests go to the lane"},
    {NULL}};

static PyMethodDef Lane_methods[] = {
    {"enter", (PyCFunction)Lane_enter, METH_VARARGS, "enter(user, db, resp, seq): take the connection"},
    {"requests", (PyCFunction)(void (*)(void))Lane_requests, METH_FASTCALL, "requests(data, ts_ns)"},
    {"replies", (PyCFunction)(void (*)(void))Lane_replies, METH_FASTCALL, "replies(data, ts_ns)"},
    {"release_requests", (PyCFunction)Lane_release_requests, METH_NOARGS, "hand the request stream back"},
    {"surrender", (PyCFunction)Lane_surrender, METH_NOARGS, "hand everything back"},
    {"take_consumed", (PyCFunction)Lane_take_consumed, METH_NOARGS, "(request, reply) bytes taken since last"},
    {"take_commands", (PyCFunction)Lane_take_commands, METH_NOARGS, "requests taken since last"},
    {NULL}};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "auditor._lane.Lane",
    .tp_basicsize = sizeof(Lane),
    .tp_dealloc = (destructor)Lane_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The fast lane of one connection.",
    .tp_init = (initproc)Lane_init,
    .tp_new = PyType_GenericNew,
    .tp_methods = Lane_methods,
    .tp_getset = Lane_getset,
    .tp_members = Lane_members,
};

/* ------------------------------------------------------------------ feeder */

/* The hot path of Pipeline.feed_many in C: a read or write of a connection in its lane, whole and next in
 * its stream, goes straight to the lane; everything else goes back to Python, untouched. The feeder reads the
 * pipeline's own objects (its connections dict, their _Conn and Stream slots) by offset, so Python and C see
 * one state. Used on Chunk lists (Feeder.feed) and, through the capsule, on ring records (ringdrain.c). */

typedef struct {
    PyObject_HEAD
    PyObject *conns;   /* dict: connection name -> pipeline _Conn */
    PyTypeObject *conn_type, *stream_type, *chunk_type;
    PyObject *to_server, *to_client;
    Py_ssize_t c_fast, c_lane, c_req, c_rep; /* _Conn slots */
    Py_ssize_t s_expected, s_segs;           /* Stream slots */
    Py_ssize_t k[6];                         /* Chunk slots: conn, direction, pos, ts_ns, data, orig_len */
} Feeder;

#define SLOT(o, off) (*(PyObject **)((char *)(o) + (off)))

static void Feeder_dealloc(Feeder *f) {
    Py_XDECREF(f->conns);
    Py_XDECREF(f->conn_type);
    Py_XDECREF(f->stream_type);
    Py_XDECREF(f->chunk_type);
    Py_XDECREF(f->to_server);
    Py_XDECREF(f->to_client);
    Py_TYPE(f)->tp_free((PyObject *)f);
}

static int Feeder_init(Feeder *f, PyObject *args, PyObject *kw) {
    static char *names[] = {"conns",      "conn_type",  "conn_slots", "stream_type", "stream_slots",
                            "chunk_type", "chunk_slots", "to_server", "to_client",   NULL};
    PyObject *conns, *cslots, *sslots, *kslots, *ts, *tc;
    PyTypeObject *ct, *st, *kt;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!OO!OO!OOO", names, &PyDict_Type, &conns, &PyType_Type, &ct,
                                     &cslots, &PyType_Type, &st, &sslots, &PyType_Type, &kt, &kslots, &ts, &tc))
        return -1;
    Py_ssize_t co[4], so[2];
    if (slot_offsets(cslots, 4, ct, co) < 0 || slot_offsets(sslots, 2, st, so) < 0 ||
        slot_offsets(kslots, 6, kt, f->k) < 0)
        return -1;
    f->c_fast = co[0], f->c_lane = co[1], f->c_req = co[2], f->c_rep = co[3];
    f->s_expected = so[0], f->s_segs = so[1];
    Py_INCREF(conns);
    Py_XSETREF(f->conns, conns);
    Py_INCREF(ct);
    Py_XSETREF(f->conn_type, ct);
    Py_INCREF(st);
    Py_XSETREF(f->stream_type, st);
    Py_INCREF(kt);
    Py_XSETREF(f->chunk_type, kt);
    Py_INCREF(ts);
    Py_XSETREF(f->to_server, ts);
    Py_INCREF(tc);
    Py_XSETREF(f->to_client, tc);
    return 0;
}

/* see lanefeed.h; *hot = (conn, to_client, what the lane returned) */
static int feeder_data(PyObject *self, PyObject *name, int to_client, long long pos, long long ts,
                       const char *data, Py_ssize_t n, long long orig, PyObject **hot) {
    Feeder *f = (Feeder *)self;
    PyObject *c = PyDict_GetItemWithError(f->conns, name);
    if (!c) return PyErr_Occurred() ? -1 : 0;
    if (Py_TYPE(c) != f->conn_type || SLOT(c, f->c_fast) != Py_True || orig > n) return 0;
    PyObject *lane = SLOT(c, f->c_lane);
    PyObject *st = SLOT(c, to_client ? f->c_rep : f->c_req);
    if (!lane || Py_TYPE(lane) != &LaneType || !st || Py_TYPE(st) != f->stream_type) return 0;
    Lane *l = (Lane *)lane;
    if (to_client && !l->pcount && !l->p.len) return 0; /* a reply no request in the lane waits for */
    PyObject *exp = SLOT(st, f->s_expected), *segs = SLOT(st, f->s_segs);
    if (!exp || !PyLong_CheckExact(exp) || !segs || !PyList_CheckExact(segs) || PyList_GET_SIZE(segs)) return 0;
    int overflow; /* (exact ints: no error, at most an overflow) */
    long long e = PyLong_AsLongLongAndOverflow(exp, &overflow);
    if (overflow || e != pos) return 0;
    PyObject *next = PyLong_FromLongLong(pos + n);
    if (!next) return -1;
    Py_SETREF(SLOT(st, f->s_expected), next);
    if (!n) return 1;
    Py_INCREF(c); /* (the lane may call back into Python: plans, the renderer) */
    PyObject *r = to_client ? lane_replies(l, data, n, ts) : lane_requests(l, data, n, ts);
    int ret = r == Py_None ? 1 : 2;
    if (!r)
        ret = -1;
    else if (r == Py_None)
        Py_DECREF(r);
    else if (!(*hot = Py_BuildValue("(OiN)", c, to_client, r)))
        ret = -1;
    Py_DECREF(c);
    return ret;
}

/* feed(events, start) -> (index, hot): takes events[start:] while they are Chunks for the lane; index: the
 * first one it did not take (for Python); hot: None, or (conn, to_client, result) of the last one taken,
 * which Python finishes (Pipeline.hot) before calling again from index. */
static PyObject *Feeder_feed(Feeder *f, PyObject *const *argv, Py_ssize_t argn) {
    if (argn != 2 || !PyList_CheckExact(argv[0])) {
        PyErr_SetString(PyExc_TypeError, "feed(events: list, start: int)");
        return NULL;
    }
    PyObject *events = argv[0];
    Py_ssize_t i = PyLong_AsSsize_t(argv[1]);
    if (i == -1 && PyErr_Occurred()) return NULL;
    PyObject *hot = NULL;
    for (; i < PyList_GET_SIZE(events); i++) {
        PyObject *ev = PyList_GET_ITEM(events, i);
        if (Py_TYPE(ev) != f->chunk_type) break;
        PyObject *name = SLOT(ev, f->k[0]), *dir = SLOT(ev, f->k[1]), *pos = SLOT(ev, f->k[2]);
        PyObject *ts = SLOT(ev, f->k[3]), *data = SLOT(ev, f->k[4]), *orig = SLOT(ev, f->k[5]);
        if (!name || !pos || !ts || !data || !orig || !PyBytes_CheckExact(data) || !PyLong_CheckExact(pos) ||
            !PyLong_CheckExact(ts) || !PyLong_CheckExact(orig) || (dir != f->to_server && dir != f->to_client))
            break;
        int overflow;
        long long p = PyLong_AsLongLongAndOverflow(pos, &overflow);
        if (overflow) break;
        long long t = PyLong_AsLongLongAndOverflow(ts, &overflow);
        if (overflow) break;
        long long o = PyLong_AsLongLongAndOverflow(orig, &overflow);
        if (overflow) break;
        int r = feeder_data((PyObject *)f, name, dir == f->to_client, p, t, PyBytes_AS_STRING(data),
                            PyBytes_GET_SIZE(data), o, &hot);
        if (r < 0) return NULL;
        if (!r) break;
        if (r == 2) {
            i++;
            break;
        }
    }
    if (!hot) {
        hot = Py_None;
        Py_INCREF(hot);
    }
    return Py_BuildValue("(nN)", i, hot);
}

static PyMethodDef Feeder_methods[] = {
    {"feed", (PyCFunction)(void (*)(void))Feeder_feed, METH_FASTCALL,
     "feed(events, start) -> (index, hot): Chunks for connections in their lane"},
    {NULL}};

static PyTypeObject FeederType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "auditor._lane.Feeder",
    .tp_basicsize = sizeof(Feeder),
    .tp_dealloc = (destructor)Feeder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The hot path of Pipeline.feed_many.",
    .tp_init = (initproc)Feeder_init,
    .tp_new = PyType_GenericNew,
    .tp_methods = Feeder_methods,
};

static LaneFeedAPI feed_api = {&FeederType, feeder_data};

static struct PyModuleDef lanemodule = {PyModuleDef_HEAD_INIT, "auditor._lane", "Per-connection fast lane.", -1, NULL};

PyMODINIT_FUNC PyInit__lane(void) {
    if (PyType_Ready(&ConfigType) < 0 || PyType_Ready(&LaneType) < 0 || PyType_Ready(&FeederType) < 0) return NULL;
    PyObject *m = PyModule_Create(&lanemodule);
    if (!m) return NULL;
    Py_INCREF(&ConfigType);
    if (PyModule_AddObject(m, "Config", (PyObject *)&ConfigType) < 0) return NULL;
    Py_INCREF(&LaneType);
    if (PyModule_AddObject(m, "Lane", (PyObject *)&LaneType) < 0) return NULL;
    Py_INCREF(&FeederType);
    if (PyModule_AddObject(m, "Feeder", (PyObject *)&FeederType) < 0) return NULL;
    if (PyModule_AddObject(m, "_feed_api", PyCapsule_New(&feed_api, LANEFEED_CAPSULE, NULL)) < 0) return NULL;
    return m;
}
