/* auditor._ringdrain: the eBPF source's record loop for data records (see
 * auditor/sources/ebpf.py, EbpfSource._drain, which does the same in Python).
 *
 * drain(buf, base, mask, cons, end, names, dirs, clock, descrs, chunk_type, out, feeder)
 *   -> (cons, records, why, hot)
 *
 * Walks ring records from position ``cons`` while they are submitted data
 * records of a known, named connection with no loss attached, appending one
 * Chunk per record to ``out``. Stops (why) at ``end`` (0), at a record still
 * being written (1), or at a record Python must handle (2: control record,
 * unknown or filtered connection, loss counters): its position is returned
 * and Python handles that one record the usual way.
 *
 * ``feeder`` (an auditor._lane.Feeder, or None): while ``out`` is empty (so
 * that events stay in order), a record the pipeline would give to its
 * connection's lane goes straight from the ring to the lane (lanefeed.h):
 * no Chunk, no bytes object. Stops with why 3 when Python must act before
 * the next record: the lane gave bytes back (``hot``: what Pipeline.hot
 * finishes), or a record became a Chunk (``hot`` None: the pipeline takes
 * ``out`` first).
 *
 * Record layout (probes/redis_audit.h, struct.Struct("<IIHHIQQQIIQ")): ring
 * header u32 len (BUSY/DISCARD bits), u32 pad; u16 type, u16 dir, u32 len,
 * u64 cid, u64 ts, u64 pos, u32 orig_len, u32 lost, u64 lost_bytes; payload.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "lanefeed.h"
#include "slots.h"

#define BUSY_BIT (1u << 31)
#define DISCARD_BIT (1u << 30)
#define LEN_MASK (~(BUSY_BIT | DISCARD_BIT))
#define REC_DATA 1
#define DATA_AT 56

static inline uint16_t rd16(const char *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t rd32(const char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t rd64(const char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static const LaneFeedAPI *feed_api;

static PyObject *drain(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t base;
    unsigned long long mask, cons, end;
    long long clock;
    PyObject *names, *dirs, *descrs, *out, *feeder = Py_None;
    PyTypeObject *chunk_type;
    if (!PyArg_ParseTuple(args, "y*nKKKO!O!LO!O!O!|O", &buf, &base, &mask, &cons, &end, &PyDict_Type, &names,
                          &PyTuple_Type, &dirs, &clock, &PyTuple_Type, &descrs, &PyType_Type, &chunk_type,
                          &PyList_Type, &out, &feeder))
        return NULL;
    Py_ssize_t so[6];
    if (PyTuple_GET_SIZE(dirs) != 2 || slot_offsets(descrs, 6, chunk_type, so) < 0) {
        PyBuffer_Release(&buf);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "dirs: 2 directions");
        return NULL;
    }
    if (feeder != Py_None) {
        if (!feed_api) feed_api = PyCapsule_Import(LANEFEED_CAPSULE, 0);
        if (!feed_api || Py_TYPE(feeder) != feed_api->feeder_type) {
            PyBuffer_Release(&buf);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "feeder: an auditor._lane.Feeder or None");
            return NULL;
        }
    }
    const char *data = buf.buf;
    Py_ssize_t size = buf.len;
    long records = 0;
    int why = 0;
    PyObject *key = NULL, *hot = NULL;
    while (cons < end) {
        Py_ssize_t off = base + (Py_ssize_t)(cons & mask);
        if (off + DATA_AT > size) {
            why = 2;
            break;
        }
        const char *r = data + off;
        uint32_t rlen = rd32(r);
        if (rlen >= DISCARD_BIT) {
            if (rlen & BUSY_BIT) {
                why = 1;
                break;
            }
            cons += (((uint64_t)(rlen & LEN_MASK)) + 15) & ~(uint64_t)7;
            records++;
            continue;
        }
        uint16_t typ = rd16(r + 8), d = rd16(r + 10);
        uint32_t ln = rd32(r + 12), orig = rd32(r + 40), lost = rd32(r + 44);
        if (typ != REC_DATA || lost || d > 1 || off + DATA_AT + (Py_ssize_t)ln > size) {
            why = 2;
            break;
        }
        key = PyLong_FromUnsignedLongLong(rd64(r + 16));
        if (!key) goto fail;
        PyObject *name = PyDict_GetItemWithError(names, key);
        Py_CLEAR(key);
        if (!name) {
            if (PyErr_Occurred()) goto fail;
            why = 2;
            break;
        }
        if (!PyObject_IsTrue(name)) {
            why = 2; /* filtered out: Python skips it */
            break;
        }
        if (feeder != Py_None && !PyList_GET_SIZE(out)) {
            Py_INCREF(name);
            int taken = feed_api->data(feeder, name, d, (long long)rd64(r + 32), (long long)rd64(r + 24) + clock,
                                       r + DATA_AT, ln, orig, &hot);
            Py_DECREF(name);
            if (taken < 0) goto fail;
            if (taken) {
                cons += (((uint64_t)rlen) + 15) & ~(uint64_t)7;
                records++;
                if (taken == 2) {
                    why = 3;
                    break;
                }
                continue;
            }
        }
        PyObject *c = chunk_type->tp_alloc(chunk_type, 0);
        if (!c) goto fail;
        Py_INCREF(name);
        PyObject *dir = PyTuple_GET_ITEM(dirs, d);
        Py_INCREF(dir);
        if (slot_put(c, so[0], name) < 0 || slot_put(c, so[1], dir) < 0 ||
            slot_put(c, so[2], PyLong_FromUnsignedLongLong(rd64(r + 32))) < 0 ||
            slot_put(c, so[3], PyLong_FromLongLong((long long)rd64(r + 24) + clock)) < 0 ||
            slot_put(c, so[4], PyBytes_FromStringAndSize(r + DATA_AT, ln)) < 0 ||
            slot_put(c, so[5], PyLong_FromUnsignedLong(orig)) < 0) {
            Py_DECREF(c);
            goto fail;
        }
        int ok = PyList_Append(out, c);
        Py_DECREF(c);
        if (ok < 0) goto fail;
        cons += (((uint64_t)rlen) + 15) & ~(uint64_t)7;
        records++;
        if (feeder != Py_None) {
            why = 3; /* the pipeline takes this Chunk before the next record can go to a lane */
            break;
        }
    }
    PyBuffer_Release(&buf);
    if (!hot) {
        hot = Py_None;
        Py_INCREF(hot);
    }
    return Py_BuildValue("(KliN)", cons, records, why, hot);
fail:
    Py_XDECREF(key);
    PyBuffer_Release(&buf);
    return NULL;
}

static PyMethodDef methods[] = {
    {"drain", drain, METH_VARARGS,
     "drain(buf, base, mask, cons, end, names, dirs, clock, descrs, chunk_type, out, feeder=None)"},
    {NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "auditor._ringdrain", "eBPF ring records to Chunks.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__ringdrain(void) { return PyModule_Create(&module); }
