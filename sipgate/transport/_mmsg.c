/*
 * sipgate.transport._mmsg: read a batch of UDP datagrams with one
 * recvmmsg(2) call and send a batch with one sendmmsg(2) (Linux), for
 * SocketTransport on IPv4 listeners.
 *
 * Python's socket module has no recvmmsg.  Under load sipgate reads dozens
 * of datagrams per wake-up of its event loop, one recvfrom each, and a
 * recvfrom costs a system call plus Python's argument parsing and a
 * 64 KiB buffer that is shrunk to the datagram; one recvmmsg per batch
 * saves ~0.45 us per datagram here (benchmarks/README.md).
 *
 * Built by `sipgate native build` with the mypyc group and covered by the
 * same freshness guard (sipgate/native.py): the pure Python build never
 * loads it and uses recvfrom.  The GIL is held throughout: MSG_DONTWAIT
 * never blocks, and the buffers are shared by every call.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH_MAX 64
/* The largest UDP payload over IPv4 is 65,507 bytes. */
#define DATAGRAM_MAX 65536

static char buffers[BATCH_MAX][DATAGRAM_MAX];
static struct mmsghdr headers[BATCH_MAX];
static struct iovec vectors[BATCH_MAX];
static struct sockaddr_in sources[BATCH_MAX];

PyDoc_STRVAR(recv_batch_doc,
"recv_batch(fd, count) -> list of (bytes, (host, port))\n\n"
"Up to count (1-64) datagrams waiting on the non-blocking IPv4 UDP socket\n"
"fd, oldest first, each with its source address as socket.recvfrom gives\n"
"it; [] when none is waiting.  Other errors raise OSError.");

static PyObject *
recv_batch(PyObject *module, PyObject *args)
{
    int fd, count;
    if (!PyArg_ParseTuple(args, "ii:recv_batch", &fd, &count))
        return NULL;
    if (count < 1 || count > BATCH_MAX) {
        PyErr_Format(PyExc_ValueError, "count must be between 1 and %d", BATCH_MAX);
        return NULL;
    }
    for (int i = 0; i < count; i++) {
        vectors[i].iov_base = buffers[i];
        vectors[i].iov_len = DATAGRAM_MAX;
        memset(&headers[i].msg_hdr, 0, sizeof(headers[i].msg_hdr));
        headers[i].msg_hdr.msg_iov = &vectors[i];
        headers[i].msg_hdr.msg_iovlen = 1;
        headers[i].msg_hdr.msg_name = &sources[i];
        headers[i].msg_hdr.msg_namelen = sizeof(sources[i]);
        headers[i].msg_len = 0;
    }
    int n = recvmmsg(fd, headers, (unsigned int)count, MSG_DONTWAIT, NULL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    char host[INET_ADDRSTRLEN];
    for (int i = 0; i < n; i++) {
        if (headers[i].msg_hdr.msg_namelen < sizeof(struct sockaddr_in) || sources[i].sin_family != AF_INET)
            continue;  /* (not from an IPv4 peer: cannot happen on an AF_INET socket) */
        if (inet_ntop(AF_INET, &sources[i].sin_addr, host, sizeof(host)) == NULL)
            continue;
        PyObject *item = Py_BuildValue("(y#(si))", buffers[i], (Py_ssize_t)headers[i].msg_len, host,
                                       (int)ntohs(sources[i].sin_port));
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    return out;
}

static struct mmsghdr out_headers[BATCH_MAX];
static struct iovec out_vectors[BATCH_MAX];
static struct sockaddr_in destinations[BATCH_MAX];

PyDoc_STRVAR(send_batch_doc,
"send_batch(fd, items) -> int\n\n"
"Send the leading items of the list items, each (bytes, (host, port)) with\n"
"host an IPv4 dotted quad, with one sendmmsg on the non-blocking socket fd;\n"
"at most 64.  Returns how many were sent from the front, 0 when the first\n"
"item's host is not a dotted quad (send that one with sendto).  Raises\n"
"BlockingIOError when the socket's buffer is full before the first, another\n"
"OSError when the first could not be sent, TypeError for a malformed item.");

static PyObject *
send_batch(PyObject *module, PyObject *args)
{
    int fd;
    PyObject *items;
    if (!PyArg_ParseTuple(args, "iO!:send_batch", &fd, &PyList_Type, &items))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items);
    if (n > BATCH_MAX)
        n = BATCH_MAX;
    unsigned int k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        PyObject *data, *addr, *host;
        int port;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 || !PyBytes_Check(data = PyTuple_GET_ITEM(item, 0))
                || !PyTuple_Check(addr = PyTuple_GET_ITEM(item, 1)) || PyTuple_GET_SIZE(addr) != 2
                || !PyUnicode_Check(host = PyTuple_GET_ITEM(addr, 0)) || !PyLong_Check(PyTuple_GET_ITEM(addr, 1))) {
            PyErr_SetString(PyExc_TypeError, "send_batch items are (bytes, (str, int))");
            return NULL;
        }
        port = (int)PyLong_AsLong(PyTuple_GET_ITEM(addr, 1));
        if (port < 0 || port > 65535) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_OverflowError, "port must be 0-65535");
            return NULL;
        }
        const char *text = PyUnicode_AsUTF8(host);
        if (text == NULL)
            return NULL;
        memset(&destinations[k], 0, sizeof(destinations[k]));
        destinations[k].sin_family = AF_INET;
        destinations[k].sin_port = htons((unsigned short)port);
        if (inet_pton(AF_INET, text, &destinations[k].sin_addr) != 1)
            break;  /* a name or an IPv6 literal: sendto's business */
        out_vectors[k].iov_base = PyBytes_AS_STRING(data);
        out_vectors[k].iov_len = (size_t)PyBytes_GET_SIZE(data);
        memset(&out_headers[k].msg_hdr, 0, sizeof(out_headers[k].msg_hdr));
        out_headers[k].msg_hdr.msg_iov = &out_vectors[k];
        out_headers[k].msg_hdr.msg_iovlen = 1;
        out_headers[k].msg_hdr.msg_name = &destinations[k];
        out_headers[k].msg_hdr.msg_namelen = sizeof(destinations[k]);
        k++;
    }
    if (k == 0)
        return PyLong_FromLong(0);
    int sent = sendmmsg(fd, out_headers, k, MSG_DONTWAIT);
    if (sent < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(sent);
}

static PyMethodDef methods[] = {
    {"send_batch", send_batch, METH_VARARGS, send_batch_doc},
    {"recv_batch", recv_batch, METH_VARARGS, recv_batch_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sipgate.transport._mmsg",
    "Batched UDP reads (recvmmsg) for sipgate's IPv4 listeners.", -1, methods,
};

PyMODINIT_FUNC
PyInit__mmsg(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "BATCH_MAX", BATCH_MAX) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
