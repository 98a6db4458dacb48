/* auditor._pcapwalk: the pcap reader's loop for the common packet (see
 * auditor/sources/pcap.py _read_pcap, make_decoder and sources/tcp.py
 * TcpTracker.feed, which do the same in Python).
 *
 * walk(buf, off, big_endian, frac_ns, link, l3off, max_rec, flows, shard_k, shard_n, ports,
 *      chunk_descrs, flow_descrs, conn_descrs, chunk_type, out, holes)
 *   -> (off, records, tracker_packets, first_ts, last_ts, why)
 *
 * Walks classic pcap records from ``off`` while each is a whole IPv4 (no
 * options, not fragmented) TCP segment without SYN/FIN/RST, of a connection
 * the tracker knows (``flows``) whose stream base is known, and at or after
 * that base; for each it does what TcpTracker.feed's fast path does (the
 * connection's last_ts, the flow's reference sequence number) and appends
 * the Chunk. Records of other connections' shards are skipped, as
 * TcpTracker._feed_shard does. Stops (why) when the next record is not
 * whole in ``buf`` (0: refill) or is anything else (2): Python handles that
 * one record the usual way, as it does data that jumps past the highest
 * byte seen in its direction (a hole: the flow's ``hi``) and a segment with an
 * ACK of a connection in ``holes`` (TcpTracker.holes: its Acked events).
 * Nothing is changed for a record it stops at.
 *
 * Link types: Ethernet without VLAN tags, Linux cooked v1/v2, and the IP
 * link types (``l3off``: the IP header's offset, or -1).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "slots.h"

static inline uint32_t rd32(const unsigned char *p, int big) {
    return big ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
               : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}
static inline uint16_t be16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32(const unsigned char *p) { return rd32(p, 1); }

static PyObject *dget(PyObject *descr, PyObject *obj) {
    return Py_TYPE(descr)->tp_descr_get(descr, obj, (PyObject *)Py_TYPE(obj));
}
static int dset(PyObject *descr, PyObject *obj, PyObject *v) {
    if (!v) return -1;
    int r = Py_TYPE(descr)->tp_descr_set(descr, obj, v);
    Py_DECREF(v);
    return r;
}

static PyObject *walk(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t off, l3off, max_rec;
    int big, link;
    long long frac_ns;
    long shard_k, shard_n;
    PyObject *flows, *ports, *cd, *fd, *nd, *out, *holes;
    PyTypeObject *chunk_type;
    if (!PyArg_ParseTuple(args, "y*npLinnO!llOO!O!O!O!O!O!", &buf, &off, &big, &frac_ns, &link, &l3off, &max_rec,
                          &PyDict_Type, &flows, &shard_k, &shard_n, &ports, &PyTuple_Type, &cd, &PyTuple_Type, &fd,
                          &PyTuple_Type, &nd, &PyType_Type, &chunk_type, &PyList_Type, &out, &PySet_Type, &holes))
        return NULL;
    if (PyTuple_GET_SIZE(cd) != 6 || PyTuple_GET_SIZE(fd) != 5 || PyTuple_GET_SIZE(nd) != 2) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "descriptor tuples: chunk 6, flow 5, conn 2");
        return NULL;
    }
    Py_ssize_t so[6]; /* the Chunk's slots: conn, direction, pos, ts_ns, data, orig_len */
    if (slot_offsets(cd, 6, chunk_type, so) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    PyObject *f_conn = PyTuple_GET_ITEM(fd, 0), *f_dir = PyTuple_GET_ITEM(fd, 1), *f_seq = PyTuple_GET_ITEM(fd, 2),
             *f_pos = PyTuple_GET_ITEM(fd, 3), *f_hi = PyTuple_GET_ITEM(fd, 4);
    PyObject *n_id = PyTuple_GET_ITEM(nd, 0), *n_last = PyTuple_GET_ITEM(nd, 1);
    const unsigned char *b = buf.buf;
    Py_ssize_t blen = buf.len;
    long records = 0, tcp = 0;
    long long first = -1, last = -1;
    int why = 0;
    for (;;) {
        if (blen - off < 16) break;
        const unsigned char *h = b + off;
        uint32_t sec = rd32(h, big), frac = rd32(h + 4, big), caplen = rd32(h + 8, big);
        if (caplen > (uint64_t)max_rec) {
            why = 2;
            break;
        }
        Py_ssize_t start = off + 16, end = start + caplen;
        if (end > blen) break;
        /* link layer */
        Py_ssize_t l3;
        unsigned et;
        if (link == 1) {
            if (caplen < 14) { why = 2; break; }
            et = be16(b + start + 12);
            l3 = start + 14;
        } else if (link == 113) {
            if (caplen < 16) { why = 2; break; }
            et = be16(b + start + 14);
            l3 = start + 16;
        } else if (link == 276) {
            if (caplen < 20) { why = 2; break; }
            et = be16(b + start);
            l3 = start + 20;
        } else if (l3off >= 0) {
            l3 = start + l3off;
            et = l3 < end && (b[l3] >> 4) == 4 ? 0x0800 : 0;
        } else {
            why = 2;
            break;
        }
        if (et != 0x0800 || l3 + 40 > end || b[l3] != 0x45) { why = 2; break; }
        const unsigned char *ip = b + l3;
        unsigned tl = be16(ip + 2), frag = be16(ip + 6), proto = ip[9];
        if (proto != 6 || (frag & 0x3FFF) || tl < 40) { why = 2; break; }
        Py_ssize_t ip_end = l3 + tl, t = l3 + 20;
        const unsigned char *tp = b + t;
        unsigned sport = be16(tp), dport = be16(tp + 2), offb = tp[12], flags = tp[13];
        uint32_t seq = be32(tp + 4);
        Py_ssize_t p0 = t + (offb >> 4) * 4;
        if (offb < 0x50 || p0 > ip_end || ip_end > end || (flags & 0x07)) { why = 2; break; }
        long long ts = (long long)sec * 1000000000LL + (long long)frac * frac_ns;
        if (shard_n > 1) {
            PyObject *dp = PyLong_FromLong(dport);
            if (!dp) goto fail;
            int srv = PySet_Contains(ports, dp);
            Py_DECREF(dp);
            if (srv < 0) goto fail;
            unsigned long client = srv ? sport : dport;
            if ((((unsigned long long)client * 0x9E3779B1ULL) >> 12) % (unsigned long)shard_n != (unsigned long)shard_k) {
                records++; /* another worker's connection */
                if (first < 0) first = ts;
                last = ts;
                off = end;
                continue;
            }
        }
        PyObject *key = Py_BuildValue("(y#Iy#I)", ip + 12, (Py_ssize_t)4, sport, ip + 16, (Py_ssize_t)4, dport);
        if (!key) goto fail;
        PyObject *flow = PyDict_GetItemWithError(flows, key);
        Py_DECREF(key);
        if (!flow) {
            if (PyErr_Occurred()) goto fail;
            why = 2;
            break;
        }
        PyObject *ref = dget(f_seq, flow);
        if (!ref) goto fail;
        if (ref == Py_None) {
            Py_DECREF(ref);
            why = 2;
            break;
        }
        long long refseq = PyLong_AsLongLong(ref);
        Py_DECREF(ref);
        PyObject *rp = dget(f_pos, flow);
        if (!rp) goto fail;
        long long refpos = PyLong_AsLongLong(rp);
        Py_DECREF(rp);
        if (PyErr_Occurred()) goto fail;
        long long delta = (long long)(((uint64_t)seq - (uint64_t)refseq + 0x80000000ULL) & 0xFFFFFFFFULL) - 0x80000000LL;
        long long pos = refpos + delta;
        Py_ssize_t n = ip_end - p0;
        if (pos < 0 && n) { why = 2; break; }
        long long hi = 0;
        if (n) {
            PyObject *h = dget(f_hi, flow);
            if (!h) goto fail;
            hi = PyLong_AsLongLong(h);
            Py_DECREF(h);
            if (hi == -1 && PyErr_Occurred()) goto fail;
            if (pos > hi) { why = 2; break; } /* a hole: TcpTracker._hole */
        }
        PyObject *conn = dget(f_conn, flow);
        if (!conn) goto fail;
        if (PySet_GET_SIZE(holes) > 0 && (flags & 0x10)) {
            PyObject *cid = dget(n_id, conn);
            int in = cid ? PySet_Contains(holes, cid) : -1;
            Py_XDECREF(cid);
            if (in) {
                Py_DECREF(conn);
                if (in < 0) goto fail;
                why = 2;
                break;
            }
        }
        /* from here on the record is ours */
        int bad = dset(n_last, conn, PyLong_FromLongLong(ts));
        if (!bad && n && delta > 0)
            bad = dset(f_seq, flow, PyLong_FromUnsignedLong(seq)) || dset(f_pos, flow, PyLong_FromLongLong(pos));
        if (!bad && n && pos + n > hi) bad = dset(f_hi, flow, PyLong_FromLongLong(pos + n));
        if (bad) {
            Py_DECREF(conn);
            goto fail;
        }
        tcp++;
        records++;
        if (first < 0) first = ts;
        last = ts;
        off = end;
        if (!n) {
            Py_DECREF(conn);
            continue;
        }
        PyObject *c = chunk_type->tp_alloc(chunk_type, 0);
        if (!c) {
            Py_DECREF(conn);
            goto fail;
        }
        bad = slot_put(c, so[0], dget(n_id, conn)) || slot_put(c, so[1], dget(f_dir, flow)) ||
              slot_put(c, so[2], PyLong_FromLongLong(pos)) || slot_put(c, so[3], PyLong_FromLongLong(ts)) ||
              slot_put(c, so[4], PyBytes_FromStringAndSize((const char *)b + p0, n)) ||
              slot_put(c, so[5], PyLong_FromSsize_t(n));
        Py_DECREF(conn);
        if (bad || PyList_Append(out, c) < 0) {
            Py_DECREF(c);
            goto fail;
        }
        Py_DECREF(c);
    }
    PyBuffer_Release(&buf);
    return Py_BuildValue("(nllLLi)", off, records, tcp, first, last, why);
fail:
    PyBuffer_Release(&buf);
    return NULL;
}

static PyMethodDef methods[] = {{"walk", walk, METH_VARARGS, "walk pcap records (see the module doc)"}, {NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "auditor._pcapwalk", "pcap records to Chunks.", -1, methods};

PyMODINIT_FUNC PyInit__pcapwalk(void) { return PyModule_Create(&module); }
