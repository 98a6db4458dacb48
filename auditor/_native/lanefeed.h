/* lanefeed.h - the fast lane's feeder, as other C modules call it (through
 * the capsule auditor._lane._feed_api; see lane.c, "feeder").
 *
 * data(feeder, name, to_client, pos, ts, bytes, n, orig_len, &hot) gives one
 * read or write of connection `name` to its lane when the pipeline would
 * (auditor/pipeline.py, Pipeline.feed_many: the connection is in its lane,
 * the bytes are whole and next in its stream) and returns
 *   1  taken;
 *   0  not for the lane: nothing was changed, the caller feeds it to the
 *      pipeline the usual way (as a Chunk);
 *   2  taken, and *hot is a new reference for Python to finish with
 *      (Pipeline._hot: the lane gave bytes back);
 *  -1  error (an exception is set).
 */
#ifndef REDIS_AUDIT_LANEFEED_H
#define REDIS_AUDIT_LANEFEED_H

#include <Python.h>

#define LANEFEED_CAPSULE "auditor._lane._feed_api"

typedef struct {
    PyTypeObject *feeder_type;
    int (*data)(PyObject *feeder, PyObject *name, int to_client, long long pos, long long ts, const char *bytes,
                Py_ssize_t n, long long orig_len, PyObject **hot);
} LaneFeedAPI;

#endif /* REDIS_AUDIT_LANEFEED_H */
