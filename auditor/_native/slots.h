/* slots.h - filling the __slots__ of a freshly allocated object (Chunk) by
 * offset, shared by pcapwalk.c and ringdrain.c.
 *
 * Setting a slot through its member descriptor (tp_descr_set) costs a call,
 * a type check and a reference swap per field; the loops fill six fields per
 * record. The descriptors are checked once per call (plain object slots of
 * exactly this type, not read-only) and their offsets used directly: the
 * object comes zeroed from tp_alloc, so there is no old value to release.
 */
#ifndef REDIS_AUDIT_SLOTS_H
#define REDIS_AUDIT_SLOTS_H

#include <Python.h>
#include <structmember.h>

/* offsets of the n member descriptors of `type` in the tuple descrs; -1 with ValueError (not n of them) or
 * TypeError (one is not a writable object slot of `type`) */
static int slot_offsets(PyObject *descrs, Py_ssize_t n, PyTypeObject *type, Py_ssize_t *off) {
    if (!PyTuple_Check(descrs) || PyTuple_GET_SIZE(descrs) != n) {
        PyErr_Format(PyExc_ValueError, "expected %zd slot descriptors", n);
        return -1;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *d = PyTuple_GET_ITEM(descrs, k);
        if (Py_TYPE(d) != &PyMemberDescr_Type || PyDescr_TYPE(d) != type) {
            PyErr_SetString(PyExc_TypeError, "not a slot descriptor of the given type");
            return -1;
        }
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READONLY)) {
            PyErr_SetString(PyExc_TypeError, "not a writable object slot");
            return -1;
        }
        off[k] = m->offset;
    }
    return 0;
}

/* store v (a new reference, or NULL after a failed constructor: -1) in the empty slot at off */
static inline int slot_put(PyObject *obj, Py_ssize_t off, PyObject *v) {
    if (!v) return -1;
    *(PyObject **)((char *)obj + off) = v;
    return 0;
}

#endif /* REDIS_AUDIT_SLOTS_H */
