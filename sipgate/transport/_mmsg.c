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
#include <limits.h>
#include <stdint.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH_MAX 64
/* The largest UDP payload over IPv4 is 65,507 bytes. */
#define DATAGRAM_MAX 65536
/* Source address strings kept for reuse, direct-mapped by address. */
#define HOSTS 64

/*
 * Everything a call touches is kept small for the first datagram after an
 * idle spell, when none of it is in the CPU's caches: the message headers
 * are set up once (module init) and a call resets only the entries the
 * previous one filled; arguments are read without PyArg_ParseTuple; a
 * source address becomes text without inet_ntop's printf, and a source
 * seen before reuses its str (and the str's cached hash, which the
 * receive path's set and dict lookups need).
 */
static char buffers[BATCH_MAX][DATAGRAM_MAX];
static struct mmsghdr headers[BATCH_MAX];
static struct iovec vectors[BATCH_MAX];
static struct sockaddr_in sources[BATCH_MAX];
static int filled;  /* entries the previous recvmmsg wrote */
static uint32_t host_keys[HOSTS];
static PyObject *host_texts[HOSTS];
/* host_texts' slot of a str, by the str's address (checked on use). */
static unsigned char host_slots[HOSTS];

#define POINTER_SLOT(p) ((unsigned int)((uintptr_t)(p) >> 4) & (HOSTS - 1))

/* A non-negative int argument (fd, count); -1 with an exception set. */
static int
int_arg(PyObject *value, const char *what)
{
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int", what);
        return -1;
    }
    long v = PyLong_AsLong(value);
    if (v < 0 || v > INT_MAX) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "%s out of range", what);
        return -1;
    }
    return (int)v;
}

/* The dotted quad of a network-order IPv4 address, as a str (new reference). */
static PyObject *
host_text(uint32_t addr)
{
    unsigned int slot = (ntohl(addr) ^ (ntohl(addr) >> 8)) & (HOSTS - 1);
    PyObject *text = host_texts[slot];
    if (text != NULL && host_keys[slot] == addr) {
        Py_INCREF(text);
        return text;
    }
    const unsigned char *b = (const unsigned char *)&addr;
    char out[16];
    int n = 0;
    for (int i = 0; i < 4; i++) {
        unsigned int v = b[i];
        if (v >= 100)
            out[n++] = (char)('0' + v / 100);
        if (v >= 10)
            out[n++] = (char)('0' + v / 10 % 10);
        out[n++] = (char)('0' + v % 10);
        out[n++] = '.';
    }
    text = PyUnicode_FromStringAndSize(out, n - 1);
    if (text == NULL)
        return NULL;
    Py_XSETREF(host_texts[slot], text);
    host_keys[slot] = addr;
    host_slots[POINTER_SLOT(text)] = (unsigned char)slot;
    Py_INCREF(text);
    return text;
}

PyDoc_STRVAR(recv_batch_doc,
"recv_batch(fd, count) -> list of (bytes, (host, port))\n\n"
"Up to count (1-64) datagrams waiting on the non-blocking IPv4 UDP socket\n"
"fd, oldest first, each with its source address as socket.recvfrom gives\n"
"it; [] when none is waiting.  Other errors raise OSError.");

static PyObject *
recv_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "recv_batch(fd, count) takes 2 arguments");
        return NULL;
    }
    int fd = int_arg(args[0], "fd");
    if (fd < 0)
        return NULL;
    int count = int_arg(args[1], "count");
    if (count < 0)
        return NULL;
    if (count < 1 || count > BATCH_MAX) {
        PyErr_Format(PyExc_ValueError, "count must be between 1 and %d", BATCH_MAX);
        return NULL;
    }
    for (int i = 0; i < filled; i++)
        headers[i].msg_hdr.msg_namelen = sizeof(sources[i]);
    filled = 0;
    int n = recvmmsg(fd, headers, (unsigned int)count, MSG_DONTWAIT, NULL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    filled = n;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        if (headers[i].msg_hdr.msg_namelen < sizeof(struct sockaddr_in) || sources[i].sin_family != AF_INET)
            continue;  /* (not from an IPv4 peer: cannot happen on an AF_INET socket) */
        PyObject *item = PyTuple_New(2), *addr = PyTuple_New(2);
        PyObject *data = PyBytes_FromStringAndSize(buffers[i], (Py_ssize_t)headers[i].msg_len);
        PyObject *host = host_text(sources[i].sin_addr.s_addr);
        PyObject *port = PyLong_FromLong(ntohs(sources[i].sin_port));
        if (item == NULL || addr == NULL || data == NULL || host == NULL || port == NULL) {
            Py_XDECREF(item), Py_XDECREF(addr), Py_XDECREF(data), Py_XDECREF(host), Py_XDECREF(port);
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(addr, 0, host);
        PyTuple_SET_ITEM(addr, 1, port);
        PyTuple_SET_ITEM(item, 0, data);
        PyTuple_SET_ITEM(item, 1, addr);
        if (PyList_Append(out, item) < 0) {
            Py_DECREF(item);
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

/* The address of a host str: a recv_batch source str by identity, else
 * inet_pton.  0 when it is not a dotted quad; -1 with an exception set. */
static int
host_address(PyObject *host, struct in_addr *out)
{
    unsigned int slot = host_slots[POINTER_SLOT(host)];
    if (host_texts[slot] == host) {  /* (the table holds it: it is that str) */
        out->s_addr = host_keys[slot];
        return 1;
    }
    const char *text = PyUnicode_AsUTF8(host);
    if (text == NULL)
        return -1;
    return inet_pton(AF_INET, text, out) == 1;
}

static PyObject *
send_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "send_batch(fd, items) takes an int and a list");
        return NULL;
    }
    int fd = int_arg(args[0], "fd");
    if (fd < 0)
        return NULL;
    PyObject *items = args[1];
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
        int found = host_address(host, &destinations[k].sin_addr);
        if (found < 0)
            return NULL;
        if (!found)
            break;  /* a name or an IPv6 literal: sendto's business */
        destinations[k].sin_port = htons((unsigned short)port);
        out_vectors[k].iov_base = PyBytes_AS_STRING(data);
        out_vectors[k].iov_len = (size_t)PyBytes_GET_SIZE(data);
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
    {"send_batch", (PyCFunction)(void (*)(void))send_batch, METH_FASTCALL, send_batch_doc},
    {"recv_batch", (PyCFunction)(void (*)(void))recv_batch, METH_FASTCALL, recv_batch_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sipgate.transport._mmsg",
    "Batched UDP reads (recvmmsg) for sipgate's IPv4 listeners.", -1, methods,
};

PyMODINIT_FUNC
PyInit__mmsg(void)
{
    for (int i = 0; i < BATCH_MAX; i++) {
        vectors[i].iov_base = buffers[i];
        vectors[i].iov_len = DATAGRAM_MAX;
        headers[i].msg_hdr.msg_iov = &vectors[i];
        headers[i].msg_hdr.msg_iovlen = 1;
        headers[i].msg_hdr.msg_name = &sources[i];
        headers[i].msg_hdr.msg_namelen = sizeof(sources[i]);
        destinations[i].sin_family = AF_INET;
        out_headers[i].msg_hdr.msg_iov = &out_vectors[i];
        out_headers[i].msg_hdr.msg_iovlen = 1;
        out_headers[i].msg_hdr.msg_name = &destinations[i];
        out_headers[i].msg_hdr.msg_namelen = sizeof(destinations[i]);
    }
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "BATCH_MAX", BATCH_MAX) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
