/*
 * sipgate.transport._mmsg: read a batch of UDP datagrams with one
 * recvmmsg(2) call and send a batch with one sendmmsg(2) (Linux), for
 * SocketTransport on IPv4 and IPv6 listeners.
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
/* The largest UDP payload over IPv4 is 65,507 bytes (65,527 over IPv6
 * without jumbograms; a longer one is cut here, as recvfrom(65535) cuts it). */
#define DATAGRAM_MAX 65536
/* Source address strings kept for reuse, direct-mapped by address. */
#define HOSTS 64
/* The largest flowinfo socket.sendto takes (20 bits). */
#define FLOWINFO_MAX 0xfffff

/* A source of either family: recvmmsg writes whichever the socket's is. */
typedef union {
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
} address;

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
static address sources[BATCH_MAX];
static int filled;  /* entries the previous recvmmsg wrote */
static uint32_t host_keys[HOSTS];
static PyObject *host_texts[HOSTS];
/* host_texts' slot of a str, by the str's address (checked on use). */
static unsigned char host_slots[HOSTS];
/* The same for IPv6 sources. */
static struct in6_addr host6_keys[HOSTS];
static PyObject *host6_texts[HOSTS];
static unsigned char host6_slots[HOSTS];

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

/* An IPv6 address as text, as socket.recvfrom writes it (inet_ntop: the
 * scope is the tuple's fourth item, not a "%" suffix), new reference. */
static PyObject *
host6_text(const struct in6_addr *addr)
{
    const unsigned char *b = addr->s6_addr;
    unsigned int slot = (b[15] ^ b[14] ^ b[13] ^ b[11] ^ (b[7] << 1) ^ (b[3] << 2)) & (HOSTS - 1);
    PyObject *text = host6_texts[slot];
    if (text != NULL && memcmp(&host6_keys[slot], addr, sizeof *addr) == 0) {
        Py_INCREF(text);
        return text;
    }
    char out[INET6_ADDRSTRLEN];
    if (inet_ntop(AF_INET6, addr, out, sizeof out) == NULL)
        return PyErr_SetFromErrno(PyExc_OSError);
    text = PyUnicode_FromString(out);
    if (text == NULL)
        return NULL;
    Py_XSETREF(host6_texts[slot], text);
    host6_keys[slot] = *addr;
    host6_slots[POINTER_SLOT(text)] = (unsigned char)slot;
    Py_INCREF(text);
    return text;
}

/* A source as socket.recvfrom gives it: (host, port) for IPv4, (host,
 * port, flowinfo, scope_id) for IPv6; NULL with an exception set. */
static PyObject *
source_tuple(const address *source, socklen_t length)
{
    if (source->sa.sa_family == AF_INET && length >= sizeof(struct sockaddr_in)) {
        PyObject *addr = PyTuple_New(2);
        PyObject *host = host_text(source->v4.sin_addr.s_addr);
        PyObject *port = PyLong_FromLong(ntohs(source->v4.sin_port));
        if (addr == NULL || host == NULL || port == NULL) {
            Py_XDECREF(addr), Py_XDECREF(host), Py_XDECREF(port);
            return NULL;
        }
        PyTuple_SET_ITEM(addr, 0, host);
        PyTuple_SET_ITEM(addr, 1, port);
        return addr;
    }
    if (source->sa.sa_family == AF_INET6 && length >= sizeof(struct sockaddr_in6)) {
        PyObject *addr = PyTuple_New(4);
        PyObject *host = host6_text(&source->v6.sin6_addr);
        PyObject *port = PyLong_FromLong(ntohs(source->v6.sin6_port));
        PyObject *flow = PyLong_FromUnsignedLong(ntohl(source->v6.sin6_flowinfo));
        PyObject *scope = PyLong_FromUnsignedLong(source->v6.sin6_scope_id);
        if (addr == NULL || host == NULL || port == NULL || flow == NULL || scope == NULL) {
            Py_XDECREF(addr), Py_XDECREF(host), Py_XDECREF(port), Py_XDECREF(flow), Py_XDECREF(scope);
            return NULL;
        }
        PyTuple_SET_ITEM(addr, 0, host);
        PyTuple_SET_ITEM(addr, 1, port);
        PyTuple_SET_ITEM(addr, 2, flow);
        PyTuple_SET_ITEM(addr, 3, scope);
        return addr;
    }
    Py_RETURN_NONE;  /* (neither: cannot happen on an IPv4 or IPv6 UDP socket) */
}

PyDoc_STRVAR(recv_batch_doc,
"recv_batch(fd, count) -> list of (bytes, address)\n\n"
"Up to count (1-64) datagrams waiting on the non-blocking IPv4 or IPv6 UDP\n"
"socket fd, oldest first, each with its source address as socket.recvfrom\n"
"gives it: (host, port), or (host, port, flowinfo, scope_id) for IPv6;\n"
"[] when none is waiting.  Other errors raise OSError.");

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
        PyObject *addr = source_tuple(&sources[i], headers[i].msg_hdr.msg_namelen);
        if (addr == Py_None) {
            Py_DECREF(addr);
            continue;
        }
        PyObject *item = PyTuple_New(2);
        PyObject *data = PyBytes_FromStringAndSize(buffers[i], (Py_ssize_t)headers[i].msg_len);
        if (item == NULL || addr == NULL || data == NULL) {
            Py_XDECREF(item), Py_XDECREF(addr), Py_XDECREF(data);
            Py_DECREF(out);
            return NULL;
        }
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
/* The same iovecs, addressed to IPv6 destinations. */
static struct mmsghdr out_headers6[BATCH_MAX];
static struct sockaddr_in6 destinations6[BATCH_MAX];

PyDoc_STRVAR(send_batch_doc,
"send_batch(fd, items) -> int\n\n"
"Send the leading items of the list items, each (bytes, (host, port)) with\n"
"host an IPv4 dotted quad, with one sendmmsg on the non-blocking IPv4 socket\n"
"fd; at most 64.  Returns how many were sent from the front, 0 when the\n"
"first item's host is not a dotted quad (send that one with sendto).  Raises\n"
"BlockingIOError when the socket's buffer is full before the first, another\n"
"OSError when the first could not be sent, TypeError for a malformed item.");

PyDoc_STRVAR(send_batch6_doc,
"send_batch6(fd, items) -> int\n\n"
"send_batch for an IPv6 socket: each address (host, port[, flowinfo[,\n"
"scope_id]]) with host an IPv6 literal without a %scope suffix (an item\n"
"that is not, or whose flowinfo is over 20 bits, stops the batch: sendto's\n"
"business).");

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

/* host_address for IPv6 literals. */
static int
host6_address(PyObject *host, struct in6_addr *out)
{
    unsigned int slot = host6_slots[POINTER_SLOT(host)];
    if (host6_texts[slot] == host) {
        *out = host6_keys[slot];
        return 1;
    }
    const char *text = PyUnicode_AsUTF8(host);
    if (text == NULL)
        return -1;
    return inet_pton(AF_INET6, text, out) == 1;
}

/* An unsigned int item of an address tuple no greater than max; -1 when
 * it is greater or not an int (sendto then decides), -2 with an
 * exception set. */
static long long
address_field(PyObject *value, unsigned long long max)
{
    if (!PyLong_Check(value))
        return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(value);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -2;
        PyErr_Clear();  /* (negative or huge: sendto's error to raise) */
        return -1;
    }
    return v > max ? -1 : (long long)v;
}

/* send_batch and send_batch6: family AF_INET or AF_INET6. */
static PyObject *
send_items(PyObject *const *args, Py_ssize_t nargs, int family)
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
        Py_ssize_t size;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 || !PyBytes_Check(data = PyTuple_GET_ITEM(item, 0))
                || !PyTuple_Check(addr = PyTuple_GET_ITEM(item, 1))
                || (size = PyTuple_GET_SIZE(addr)) < 2 || size > (family == AF_INET ? 2 : 4)
                || !PyUnicode_Check(host = PyTuple_GET_ITEM(addr, 0)) || !PyLong_Check(PyTuple_GET_ITEM(addr, 1))) {
            PyErr_SetString(PyExc_TypeError, family == AF_INET ? "send_batch items are (bytes, (str, int))"
                            : "send_batch6 items are (bytes, (str, int[, int[, int]]))");
            return NULL;
        }
        port = (int)PyLong_AsLong(PyTuple_GET_ITEM(addr, 1));
        if (port < 0 || port > 65535) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_OverflowError, "port must be 0-65535");
            return NULL;
        }
        int found;
        if (family == AF_INET) {
            found = host_address(host, &destinations[k].sin_addr);
            destinations[k].sin_port = htons((unsigned short)port);
        } else {
            long long flow = size > 2 ? address_field(PyTuple_GET_ITEM(addr, 2), FLOWINFO_MAX) : 0;
            long long scope = size > 3 ? address_field(PyTuple_GET_ITEM(addr, 3), UINT32_MAX) : 0;
            if (flow == -2 || scope == -2)
                return NULL;
            if (flow < 0 || scope < 0)
                break;
            found = host6_address(host, &destinations6[k].sin6_addr);
            destinations6[k].sin6_port = htons((unsigned short)port);
            destinations6[k].sin6_flowinfo = htonl((uint32_t)flow);
            destinations6[k].sin6_scope_id = (uint32_t)scope;
        }
        if (found < 0)
            return NULL;
        if (!found)
            break;  /* a name, or a literal of the other family: sendto's business */
        out_vectors[k].iov_base = PyBytes_AS_STRING(data);
        out_vectors[k].iov_len = (size_t)PyBytes_GET_SIZE(data);
        k++;
    }
    if (k == 0)
        return PyLong_FromLong(0);
    int sent = sendmmsg(fd, family == AF_INET ? out_headers : out_headers6, k, MSG_DONTWAIT);
    if (sent < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(sent);
}

static PyObject *
send_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return send_items(args, nargs, AF_INET);
}

static PyObject *
send_batch6(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return send_items(args, nargs, AF_INET6);
}

static PyMethodDef methods[] = {
    {"send_batch", (PyCFunction)(void (*)(void))send_batch, METH_FASTCALL, send_batch_doc},
    {"send_batch6", (PyCFunction)(void (*)(void))send_batch6, METH_FASTCALL, send_batch6_doc},
    {"recv_batch", (PyCFunction)(void (*)(void))recv_batch, METH_FASTCALL, recv_batch_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sipgate.transport._mmsg",
    "Batched UDP reads and writes (recvmmsg, sendmmsg) for sipgate's listeners.", -1, methods,
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
        destinations6[i].sin6_family = AF_INET6;
        out_headers6[i].msg_hdr.msg_iov = &out_vectors[i];
        out_headers6[i].msg_hdr.msg_iovlen = 1;
        out_headers6[i].msg_hdr.msg_name = &destinations6[i];
        out_headers6[i].msg_hdr.msg_namelen = sizeof(destinations6[i]);
    }
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "BATCH_MAX", BATCH_MAX) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
